"""Hostile or broken user inputs other than streams: model files, videos, recipes -> one clear error each."""

import os
import pickle

import numpy as np
import pytest
import torch
import yaml
from _tiny_codec import clip, codec, tiny_model
from PIL import Image

from progvc.cli import main as cli_main
from progvc.codec import CodecModel, ModelLoadError
from progvc.codec import model as model_module
from progvc.errors import ConfigError, ProgvcError
from progvc.io import write_video


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    tiny_model().save(path)
    return path


def one_line_error(call, error=ModelLoadError, match=""):
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_model_files_truncated_corrupt_empty_or_not_a_file(tmp_path, model_file):
    data = model_file.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    one_line_error(lambda: CodecModel.load(tmp_path / "cut.pt"), match="truncated or corrupt")
    flipped = bytearray(data)
    # inside a weight record: torch.load alone would not see it
    for i in range(len(data) // 2, len(data) // 2 + 16):
        flipped[i] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    one_line_error(lambda: CodecModel.load(tmp_path / "flipped.pt"), match="corrupt model file")
    (tmp_path / "empty.pt").write_bytes(b"")
    one_line_error(lambda: CodecModel.load(tmp_path / "empty.pt"), match="empty file")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    one_line_error(
        lambda: CodecModel.load(tmp_path / "random.pt"), match="cannot load safely|refused by the safe loader"
    )
    one_line_error(lambda: CodecModel.load(tmp_path), match="is a folder")
    assert CodecModel.load(model_file).fingerprint() == tiny_model().fingerprint()


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "plain.pt", "wb") as fh:
        pickle.dump({"format": "progvc-model", "payload": _RunsCode()}, fh)
    torch.save({"format": "progvc-model", "payload": _RunsCode()}, tmp_path / "zip.pt")
    for name in ("plain.pt", "zip.pt"):
        message = one_line_error(lambda name=name: CodecModel.load(tmp_path / name), match="refused")
        assert "weights_only=True" in message
    assert not (tmp_path / "pwned.txt").exists()


def test_oversized_model_files_and_configs(tmp_path, monkeypatch, model_file):
    big = tmp_path / "big.pt"
    with open(big, "wb") as fh:  # sparse: no disk space used
        fh.truncate(model_module.MAX_MODEL_BYTES + 1)
    one_line_error(lambda: CodecModel.load(big), match="GiB limit")
    config = tiny_model().config
    config["tokenizer"]["init_args"]["vocab_size"] = -3
    torch.save(
        {"format": "progvc-model", "version": 1, "config": config, "state_dict": {}}, tmp_path / "neg.pt"
    )
    one_line_error(lambda: CodecModel.load(tmp_path / "neg.pt"), ConfigError, "vocab_size")
    config["tokenizer"]["init_args"]["vocab_size"] = "many"
    torch.save(
        {"format": "progvc-model", "version": 1, "config": config, "state_dict": {}}, tmp_path / "str.pt"
    )
    one_line_error(lambda: CodecModel.load(tmp_path / "str.pt"), match="malformed model config")


def test_bad_videos_give_one_clear_error_from_compress(tmp_path, model_file, capsys):
    write_video(tmp_path / "ok.mp4", iter(np.concatenate([clip()] * 2)), fps=25)
    data = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "mixed" / "f1.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "mixed" / "f2.png")
    model = ["--model", str(model_file), "--quiet"]
    for name, match in (
        ("cut.mp4", "not a readable video"),
        ("empty.mp4", "empty file"),
        ("nothing", "folder holds no images"),
        ("mixed", "differs from the first image"),
        ("missing.mp4", "no such file"),
    ):
        assert cli_main(["compress", str(tmp_path / name), str(tmp_path / "o.pgv"), *model]) == 2, name
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o.pgv").exists()
    with pytest.raises(ConfigError, match="frame size changes"):
        codec().compress(iter([clip()[0], clip()[1, :32, :32]]))


def test_a_1x1_video_round_trips(tmp_path, model_file, capsys):
    write_video(tmp_path / "dot.y4m", iter(np.full((3, 1, 1, 3), 200, np.uint8)), fps=25)
    model = ["--model", str(model_file), "--quiet"]
    assert cli_main(["compress", str(tmp_path / "dot.y4m"), str(tmp_path / "dot.pgv"), *model]) == 0
    assert cli_main(["decompress", str(tmp_path / "dot.pgv"), str(tmp_path / "out"), *model]) == 0
    assert len(list((tmp_path / "out").glob("frame_*.png"))) == 3
    assert np.asarray(Image.open(sorted((tmp_path / "out").glob("*.png"))[0])).shape == (1, 1, 3)
    capsys.readouterr()


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("tokenizer", "class_path"), "progvc.tokenizers.nope.Nope", "not a registered tokenizer"),
        (("context_model", "class_path"), "torch.nn.Linear", "not a registered context model"),
        (("tokenizer", "init_args"), [1, 2], "must be a mapping"),
        (("tokenizer", "init_args", "vocab_size"), "big", "bad tokenizer init_args"),
        (("tokenizer", "init_args", "bogus"), 1, "unexpected keyword"),
        (("context_model", "init_args"), {"depth": "deep"}, "malformed model config"),
    ],
)
def test_bad_recipes_give_one_clear_error(tmp_path, path, value, match):
    recipe = yaml.safe_load(open("recipes/tiny.yaml"))
    node = recipe["model"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    one_line_error(lambda: CodecModel.from_recipe(tmp_path / "r.yaml"), ProgvcError, match)
