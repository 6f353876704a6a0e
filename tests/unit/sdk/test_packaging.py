import json
import subprocess
import sys

SERVER_SIDE = ("aisystant_server", "pyramid", "sqlalchemy", "alembic", "redis", "rq", "gevent", "anthropic", "socketio", "colander", "passlib")


def test_sdk_and_cli_import_nothing_from_the_server_side():
    code = "import json, sys, aisystant_sdk, aisystant_sdk.cli, aisystant_sdk.config; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert [m for m in modules if m.split(".")[0] in SERVER_SIDE] == []


def test_public_api():
    import aisystant_sdk

    for name in ("Client", "AisystantError", "AuthError", "NotFoundError", "RateLimitedError", "ModelNotConfiguredError", "UnreachableError"):
        assert name in aisystant_sdk.__all__
    assert aisystant_sdk.__version__
