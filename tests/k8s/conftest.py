"""Render every overlay once per session (kubectl kustomize on a scratch copy)."""
import pytest

from tests.k8s import manifests


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    return manifests.render(tmp_path_factory.mktemp("k8s-render"))


@pytest.fixture(scope="session")
def k8s_script():
    return manifests.load_script()
