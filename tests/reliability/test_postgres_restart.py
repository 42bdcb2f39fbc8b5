"""PostgreSQL restarted while the service runs: requests fail cleanly (the envelope, no
hang), then the service recovers by itself. Runs on a throwaway cluster of its own."""

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager

import httpx
import pytest

from tests.live import ROOT, free_port, live_gunicorn, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

VERSION = "15"
NAME = "chatfault"


@contextmanager
def throwaway_cluster():
    if not shutil.which("pg_createcluster"):
        pytest.skip("needs Debian's postgresql-common (pg_createcluster) to make a cluster")
    port = free_port()
    subprocess.run(["pg_dropcluster", "--stop", VERSION, NAME], capture_output=True, check=False)
    subprocess.run(
        ["pg_createcluster", VERSION, NAME, "-p", str(port), "--start", "--", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    try:
        yield port
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", VERSION, NAME], capture_output=True, check=False
        )


def ctl(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, NAME, action, "-m", "fast"],
        check=True,
        capture_output=True,
    )


def test_requests_fail_cleanly_while_postgres_is_down_then_the_service_recovers(tmp_path):
    with throwaway_cluster() as port:
        url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            check=True,
            env={**os.environ, "DATABASE_URL": url},
        )
        env = {
            "DATABASE_URL": url,
            "LLM_PROVIDER": "local",
            "LOCAL_LLM_CHUNK_DELAY_MS": "0",
            "DB_POOL_TIMEOUT": "3",
        }
        with live_gunicorn(env=env, tmp_path=tmp_path) as server:
            password = "a-long-passphrase-42"
            httpx.post(
                f"{server.url}/api/auth/register", json={"username": "pat", "password": password}
            ).raise_for_status()
            token = httpx.post(
                f"{server.url}/api/auth/token", json={"username": "pat", "password": password}
            ).json()["data"]
            headers = {"Authorization": f"Bearer {token['access']}"}
            chat_id = httpx.post(f"{server.url}/api/chat", json={}, headers=headers).json()["data"][
                "id"
            ]

            ctl("stop")
            down_health = httpx.get(f"{server.url}/health", timeout=30)
            down_message = httpx.post(
                f"{server.url}/api/chat/{chat_id}/message",
                json={"message": "anyone there?"},
                headers=headers,
                timeout=30,
            )
            ctl("start")

            def recovered():
                response = httpx.post(
                    f"{server.url}/api/chat/{chat_id}/message",
                    json={"message": "back?"},
                    headers=headers,
                    timeout=30,
                )
                return response.status_code == 200 and '"done":true' in response.text

            wait_until(recovered, timeout=30, interval=0.5, message="the service to recover")
            health_after = httpx.get(f"{server.url}/health", timeout=10)

    assert down_health.status_code == 503
    assert down_health.json()["error"]["code"] == "unhealthy"
    assert 500 <= down_message.status_code < 600
    assert down_message.headers["content-type"].startswith("application/json")
    assert down_message.json()["status"] == "error"
    assert health_after.status_code == 200
