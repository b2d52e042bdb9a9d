"""Print a wheel's requirements, one a line, with the given extras' included and markers dropped.

Used by check-floors.sh to name every requirement on the install command line, so that
``--resolution lowest-direct`` takes each one at its floor.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser


def requirements(wheel: str, extras: set[str]) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    found = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        extra = marker.split("extra ==")[-1].strip().strip("'\"") if "extra ==" in marker else None
        if extra is None or extra in extras:
            found.append(requirement.strip())
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], set(sys.argv[2:]))))
