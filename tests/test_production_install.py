"""A production install by the docs: the steps of docs/operations.md ("Deploy"), run
line by line in a copy of the checkout with a fresh virtualenv first on PATH (the project
installed WITHOUT its dev extras), DEBUG=false, then one reply streamed from the production
server, with Gemini played by tests/fakes/gemini.py. pip's cache makes the install quick;
it needs PyPI (or the configured index) for anything not cached."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.fakes.gemini import FakeGemini, Script
from tests.launcher import running_server
from tests.live import database_url, free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHUNKS = ["Production", " install", " streams", " this."]
PASSWORD = "a-long-passphrase-42"


def deploy_steps() -> list[str]:
    """The command lines of the first ```sh block under "## Deploy" in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Deploy") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def copy_checkout(target: Path) -> None:
    """What a clone of this tree holds (tracked and new files), without .venv and caches."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def clean_environment(venv: Path, **production) -> dict[str, str]:
    """No variable of this test run leaks in (DATABASE_URL, LLM_PROVIDER, …) except pip's
    own configuration; the new virtualenv comes first on PATH."""
    path = [p for p in os.environ["PATH"].split(":") if p and not p.startswith(str(ROOT))]
    env = {
        "PATH": ":".join([str(venv / "bin"), *path]),
        "VIRTUAL_ENV": str(venv),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    passthrough = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy")
    env.update({k: v for k, v in os.environ.items() if k.startswith(passthrough)})
    env.update(production)
    return env


def test_the_documented_steps_install_and_serve_a_stream_without_dev_extras(tmp_path):
    steps = deploy_steps()
    assert steps[0] == "pip install ."
    assert steps[-1] == "gunicorn -c config/gunicorn.conf.py config.wsgi"

    checkout = tmp_path / "checkout"
    copy_checkout(checkout)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)

    fake = FakeGemini().start()
    fake.default = Script(chunks=CHUNKS, delay_ms=20)
    port = free_port()
    if connection.vendor == "postgresql":
        db_url = database_url()  # pytest's test database; migrate finds it up to date
    else:
        db_url = f"sqlite:///{tmp_path / 'production.sqlite3'}"
    env = clean_environment(
        venv,
        DEBUG="false",
        SECRET_KEY="x7!kq2@pz9#lm4$vn8%rt6^yw3&bc5*hd1(gf0)js-_=+ab2cd3ef4gh5",
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=db_url,
        GEMINI_API_KEY="test-key-not-secret",
        GEMINI_BASE_URL=fake.url,
        GEMINI_TIMEOUT_MS="5000",
        HOST="127.0.0.1",
        PORT=str(port),
        GUNICORN_WORKERS="1",
        # Production's shared cache when this run has Redis (docs/operations.md): the pool,
        # the rate limit and the reply's event log as deployed.
        **({"CACHE_URL": os.environ["REDIS_TEST_URL"]} if os.environ.get("REDIS_TEST_URL") else {}),
    )
    log_path = tmp_path / "steps.log"
    try:
        with log_path.open("w") as log:
            for step in steps[:-1]:
                log.write(f"$ {step}\n")
                log.flush()
                result = subprocess.run(
                    ["bash", "-c", step], cwd=checkout, env=env, stdout=log, stderr=log
                )
                assert result.returncode == 0, f"{step!r} failed:\n{log_path.read_text()}"
        # Only the project's dependencies: the dev extras' packages are absent.
        absent = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True
        )
        assert absent.returncode != 0

        server_log = tmp_path / "gunicorn.log"
        documented = ["bash", "-c", f"exec {steps[-1]}"]
        with running_server(
            documented, env=env, port=port, log_path=server_log, cwd=checkout, start_timeout=60
        ) as server:
            url = server.url
            assert "Using worker: gevent" in server.log()
            model = httpx.get(f"{url}/health").json()["data"]["model"]
            assert model["provider"] == "gemini" and model["state"] == "ok"

            # As the TLS proxy would say; without it SECURE_SSL_REDIRECT answers 301.
            with httpx.Client(base_url=url, headers={"X-Forwarded-Proto": "https"}) as http:
                assert http.get("/api/user/me").status_code == 401
                http.post(
                    "/api/auth/register",
                    json={"username": "prod-user", "email": "", "password": PASSWORD},
                ).raise_for_status()
                access = http.post(
                    "/api/auth/token", json={"username": "prod-user", "password": PASSWORD}
                ).json()["data"]["access"]
                auth = {"Authorization": f"Bearer {access}"}
                chat_id = http.post("/api/chat", json={}, headers=auth).json()["data"]["id"]
                events = []
                with http.stream(
                    "POST",
                    f"/api/chat/{chat_id}/message",
                    json={"message": "hello from production"},
                    headers=auth,
                    timeout=30,
                ) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "text/event-stream"
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            events.append(json.loads(line.removeprefix("data: ")))

                # Templates and collected static files come from the checkout.
                login_page = http.get("/admin/login/")
                assert login_page.status_code == 200
                stylesheet = re.search(
                    r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', login_page.text
                )
                assert stylesheet, "no hashed (collectstatic manifest) stylesheet in the admin page"
                assert http.get(stylesheet.group(1)).status_code == 200

        assert [e["text"] for e in events if "text" in e] == CHUNKS
        done = events[-1]
        assert done["done"] is True and "error" not in done, done
        assert done["finish_reason"] == "stop"
        assert done["tokens_used"] > 0
        assert len(fake.generate_requests()) == 1
        if os.environ.get("REDIS_TEST_URL"):  # the reply's events went to Redis Streams
            import redis

            log = redis.Redis.from_url(os.environ["REDIS_TEST_URL"])
            assert log.xlen(f"chat:reply:{done['message_id']}:log") == len(events)
    finally:
        fake.stop()
