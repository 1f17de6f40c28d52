"""The deployment recipe of deploy/, tested: nginx terminating TLS in front of gunicorn running the app with DEBUG off.

The stack (tests/deploy/stack.py) is the shipped nginx site, the web unit's gunicorn command and the example
environment, with only paths, ports and secrets replaced; it runs on the test database, and clients talk to it over
https with the throw-away certificate as their only trusted one.
"""

from __future__ import annotations

import http.client
import secrets
import time
from collections.abc import Iterator

import pytest
import requests
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection

from tests import factories
from tests.deploy.stack import SERVER_NAME, Deployment, deployment
from tests.servers import LOCALHOST
from wxnotify.wechat.crypto import compute_signature

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Django's own, so users made here sign in on the server (the test settings' MD5 hasher is not in its list).
DEFAULT_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
# Not the proxy's address (FORWARDED_ALLOW_IPS keeps its default, 127.0.0.1 and ::1): a client on this host.
ELSEWHERE = "127.0.0.2"
MIB = 1024 * 1024


def database_url() -> str:
    """The test database as a URL the server processes can use."""
    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    return f"postgres://{config['USER']}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


@pytest.fixture(scope="module")
def stack(deploy_tools, django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Deployment]:
    with django_db_blocker.unblock():
        url = database_url()
    app_env = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "WXNOTIFY_METRICS_TOKEN": secrets.token_urlsafe(32),
        # The keys of this test process, which stores the accounts the server reads.
        "WXNOTIFY_ENCRYPTION_KEYS": ",".join([Fernet.generate_key().decode(), *settings.WXNOTIFY_ENCRYPTION_KEYS]),
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
    }
    with deployment(tools=deploy_tools, directory=tmp_path_factory.mktemp("deploy"), app_env=app_env) as running:
        yield running


@pytest.fixture
def public(stack: Deployment) -> Iterator[requests.Session]:
    """A client of the public site: https, the certificate trusted, the server's name as Host."""
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the certificate below, proxies the route
        session.verify = str(stack.certificate)
        session.headers["Host"] = SERVER_NAME
        yield session


@pytest.fixture
def default_hashers(settings) -> None:
    settings.PASSWORD_HASHERS = DEFAULT_HASHERS


def set_cookies(response: requests.Response) -> dict[str, str]:
    """Each Set-Cookie header of the response by cookie name, attributes lower-cased."""
    return {value.split("=", 1)[0]: value.lower() for value in response.raw.headers.getlist("Set-Cookie")}


def sign_in(public: requests.Session, stack: Deployment, path: str, **form: str) -> requests.Response:
    page = public.get(f"{stack.https}{path}", timeout=30)
    assert page.status_code == 200
    csrf = set_cookies(page)["csrftoken"]
    assert "; secure" in csrf
    answer = public.post(
        f"{stack.https}{path}",
        data={**form, "csrfmiddlewaretoken": public.cookies["csrftoken"]},
        headers={"Referer": f"https://{SERVER_NAME}{path}"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302, answer.text[:500]
    session = set_cookies(answer)["sessionid"]
    assert "; secure" in session and "; httponly" in session
    return answer


def from_the_app(response: requests.Response) -> bool:
    """Every answer of the app carries X-Request-ID (wxnotify.middleware); nginx's own answers do not."""
    return "X-Request-ID" in response.headers


def test_admin_signs_in_over_https_with_secure_cookies(stack, public, default_hashers, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-deploy")
    answer = sign_in(public, stack, "/admin/login/", username="root", password="pw-root-deploy", next="/admin/")
    assert answer.headers["Location"] == "/admin/"
    index = public.get(f"{stack.https}/admin/", timeout=30)
    assert index.status_code == 200 and 'action="/admin/logout/"' in index.text


def test_console_signs_in_over_https_with_secure_cookies(stack, public, default_hashers, django_user_model):
    account = factories.create_demo_account()
    factories.create_staff(django_user_model, "staff_d", factories.ensure_staff_group(), account)
    answer = sign_in(public, stack, "/console/login/", username="staff_d", password="pw-staff_d")
    assert answer.headers["Location"] == "/console/"
    assert public.get(f"{stack.https}/console/", timeout=30).status_code == 200


def test_hsts_is_sent_over_https(stack, public):
    answer = public.get(f"{stack.https}/admin/login/", timeout=30)
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_plain_http_is_redirected_by_nginx(stack):
    with requests.Session() as session:
        session.trust_env = False
        answer = session.get(
            f"http://{LOCALHOST}:{stack.http_port}/admin/",
            headers={"Host": SERVER_NAME},
            allow_redirects=False,
            timeout=30,
        )
    assert (answer.status_code, answer.headers["Location"]) == (301, f"https://{SERVER_NAME}/admin/")


def direct(stack: Deployment, path: str, source: str, **headers: str) -> http.client.HTTPResponse:
    """GET straight from gunicorn, from the given local address, claiming HTTPS."""
    conn = http.client.HTTPConnection(LOCALHOST, stack.gunicorn_port, timeout=30, source_address=(source, 0))
    conn.request("GET", path, headers={"Host": SERVER_NAME, "X-Forwarded-Proto": "https", **headers})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_forwarded_proto_is_believed_only_from_the_proxy(stack):
    """A client reaching gunicorn itself cannot claim HTTPS: it is redirected, with no HSTS and no cookie."""
    response = direct(stack, "/admin/login/", ELSEWHERE)
    assert response.status == 301
    assert response.getheader("Location") == f"https://{SERVER_NAME}/admin/login/"
    assert response.getheader("Strict-Transport-Security") is None
    # The proxy's own address is believed: what nginx sends.
    assert direct(stack, "/admin/login/", LOCALHOST).status == 200


def test_static_files_come_from_nginx(stack, public):
    answer = public.get(f"{stack.https}/static/admin/css/base.css", timeout=30)
    assert answer.status_code == 200
    assert answer.content == (stack.static_root / "admin" / "css" / "base.css").read_bytes()
    assert not from_the_app(answer) and answer.headers["Server"].startswith("nginx")
    assert answer.headers["Content-Type"].startswith("text/css")
    # Django itself serves none without DEBUG.
    assert direct(stack, "/static/admin/css/base.css", LOCALHOST).status == 404


def test_callback_url_verification_answers_through_the_proxy(stack, public):
    account = factories.create_demo_account(message_mode="plaintext")
    timestamp, nonce = str(int(time.time())), "84729301"
    query = {"signature": compute_signature(account.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    answer = public.get(f"{stack.https}{account.callback_path()}", params={**query, "echostr": "e-4711"}, timeout=30)
    assert (answer.status_code, answer.text) == (200, "e-4711")
    bad = public.get(f"{stack.https}{account.callback_path()}", params={**query, "echostr": "x", "nonce": "1"})
    assert bad.status_code == 403


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("/wechat/callback/wx0000000000000000/", 64 * 1024 + 1),
        ("/api/v1/campaigns/", 16 * MIB + 1),
        ("/admin/login/", 2560 * 1024 + 1),
    ],
)
def test_oversized_body_is_refused_by_nginx(stack, public, path, size):
    answer = public.post(f"{stack.https}{path}", data=b"x" * size, timeout=60)
    assert answer.status_code == 413
    assert not from_the_app(answer)


def test_large_body_the_app_refuses_unread_gets_the_apps_answer(stack, public):
    """12 MiB that nginx lets through to an endpoint that refuses an anonymous caller before reading the body: the
    caller gets the app's 401, not a 502 because gunicorn closed the connection with the body unread."""
    body = b"x" * (12 * MIB)
    for _attempt in range(3):
        answer = public.post(
            f"{stack.https}/api/v1/campaigns/", data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        assert answer.status_code == 401, answer.text[:300]
        assert from_the_app(answer)
