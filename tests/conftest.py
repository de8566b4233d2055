"""Fixtures for every test folder."""
import pytest


@pytest.fixture(autouse=True)
def _fresh_provenance_state(monkeypatch):
    """Each test starts with no run records opened and no kept-output notes: in a real command these registries
    live for one process and one run, but the tests call many runs in one process, and an earlier test's open
    record would otherwise show up in a later test's interrupt line."""
    from reparam import provenance

    monkeypatch.setattr(provenance, "_OPEN", {})
    monkeypatch.setattr(provenance, "_KEPT", {})
