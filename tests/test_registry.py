"""Registries: decorator registration, lookup errors, and discovery through entry points."""

import subprocess
import sys
import textwrap

import pytest

from progvc.coders import CODERS, EntropyCoder
from progvc.context_models import CONTEXT_MODELS
from progvc.registry import Registry, RegistryError
from progvc.tokenizers import TOKENIZERS


def test_register_and_lookup():
    reg = Registry("coder", "progvc.test-nothing", EntropyCoder)

    @reg.register("dummy")
    class Dummy(EntropyCoder):
        def encoder(self):  # pragma: no cover - never called
            raise NotImplementedError

        def decoder(self, data):  # pragma: no cover
            raise NotImplementedError

    assert reg.get("dummy") is Dummy and Dummy.registry_name == "dummy"
    assert reg.names() == ["dummy"] and "dummy" in reg
    with pytest.raises(RegistryError, match="unknown coder 'nope'; known: dummy"):
        reg.get("nope")
    with pytest.raises(TypeError):
        reg.register("bad")(int)


def test_families_have_their_groups():
    assert TOKENIZERS.group == "progvc.tokenizers"
    assert CONTEXT_MODELS.group == "progvc.context_models"
    assert CODERS.group == "progvc.coders"


def test_third_party_plugin_found_through_entry_point(tmp_path):
    """A package outside progvc, installed with an entry point, shows up in the registry and in `progvc list`."""
    pkg = tmp_path / "thirdparty_ctx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from progvc.context_models import ContextModel

            class OutsideModel(ContextModel):
                """A context model from another package."""

                def forward(self, cur, prev=None):
                    return []

                def init_state(self, batch_size):
                    return None

                def step(self, state, k, cur_k, prev_k=None):
                    return None
            '''
        )
    )
    dist = tmp_path / "thirdparty_ctx-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-ctx\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[progvc.context_models]\noutside = thirdparty_ctx:OutsideModel\n")
    code = textwrap.dedent(
        """
        import sys
        from progvc.context_models import CONTEXT_MODELS
        cls = CONTEXT_MODELS.get("outside")
        assert cls.__module__ == "thirdparty_ctx", cls
        assert "outside" in CONTEXT_MODELS.names()
        from progvc.cli import main
        sys.exit(main(["list"]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "outside" in out.stdout and "thirdparty_ctx.OutsideModel" in out.stdout
