"""The start-up floor for a Typer CLI: two commands, nothing else imported (bench/cli.py)."""

import typer

app = typer.Typer(add_completion=False)


@app.command()
def up(workers: int = 1) -> None:
    """Create databases."""


@app.command()
def down() -> None:
    """Drop them."""


if __name__ == "__main__":
    app()
