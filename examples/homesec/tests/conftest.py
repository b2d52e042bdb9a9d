import httpx
import pytest
from homesec import db
from homesec.api import app


@pytest.fixture
async def client(testdb_env, testdb_clean, testdb_redis):
    """The API on this worker's database and Redis; emptied again afterwards."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as ac,
    ):
        yield ac
    testdb_clean()


@pytest.fixture
def app_db(testdb_env):
    """homesec.db's own (sync) engines, on this worker's database; closed afterwards."""
    yield
    db.dispose_sync_engines()
