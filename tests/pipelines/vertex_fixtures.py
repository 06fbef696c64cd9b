"""Fixtures shared by the tests that drive the real google-cloud-aiplatform SDK against the
loopback fake of the Vertex AI API (test_submit_vertex.py, test_registry_vertex.py).

Assign them to module-level names of a test module, after putting this folder on `sys.path`:
`loopback_only, credentials, no_credentials = vertex_fixtures.FIXTURES` (`loopback_only` is
autouse, so this guards every test of that module).
"""

import socket

import pytest

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fails any connection the SDK would open to anything but this machine."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in _LOOPBACK:
            raise AssertionError(f"the test tried to reach {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK and host is not None:
            raise AssertionError(f"the test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture()
def credentials(monkeypatch):
    """Application Default Credentials that need no Google account."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (AnonymousCredentials(), None))


@pytest.fixture()
def no_credentials(monkeypatch):
    """Application Default Credentials lookup failing as it does on a machine without a login."""
    import google.auth
    from google.auth import exceptions

    def missing(scopes=None):
        raise exceptions.DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", missing)


# In the order the docstring assigns them.
FIXTURES = (loopback_only, credentials, no_credentials)
