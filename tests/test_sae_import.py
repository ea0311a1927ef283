"""Import of sparsify checkpoints (cfg.json + sae.safetensors) into our SAE format."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vs2_export.cli import app
from vs2_export.errors import Vs2Error
from vs2_export.sae import load_sae
from vs2_export.train.import_sae import import_sae, read_sparsify


def sparsify_folder(folder, d=32, expansion=2, k=6, dtype=torch.float32, num_latents=0,
                    **cfg_extra):
    """A checkpoint laid out as sparsify's SparseCoder.save_to_disk writes it."""
    torch.manual_seed(0)
    n = num_latents or d * expansion
    folder.mkdir(parents=True)
    tensors = {"encoder.weight": torch.randn(n, d) / d**0.5, "encoder.bias": torch.randn(n) * 0.1,
               "W_dec": torch.randn(n, d) / d**0.5, "b_dec": torch.randn(d) + 3.0}
    save_file({k_: v.to(dtype) for k_, v in tensors.items()}, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": expansion, "normalize_decoder": True,
           "num_latents": num_latents, "k": k, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": d, **cfg_extra}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return tensors


def sparsify_forward(t, x, k):
    """sparsify's SparseCoder.forward output (sae_out), restated."""
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    acts, idx = pre.topk(k)
    return torch.zeros_like(pre).scatter(1, idx, acts) @ t["W_dec"] + t["b_dec"]


def test_imported_sae_computes_what_sparsify_computes(store, tmp_path):
    tensors = sparsify_folder(tmp_path / "sp")
    report = import_sae(tmp_path / "sp", store, tmp_path / "sae")
    sae, _ = load_sae(tmp_path / "sae")
    x = torch.randn(16, 32) + 3.0
    with torch.no_grad():
        torch.testing.assert_close(sae(x), sparsify_forward(tensors, x, 6), rtol=1e-5, atol=1e-5)
    assert sae.cfg.n == 64 and sae.cfg.k == 6 and report["source_format"] == "sparsify"
    assert sae.mu.abs().sum() > 0                   # the store's mean, for the gate


def test_bf16_checkpoint_and_cli(store, tmp_path):
    sparsify_folder(tmp_path / "sp", dtype=torch.bfloat16, num_latents=96, expansion=32)
    assert read_sparsify(tmp_path / "sp").cfg.n == 96
    result = CliRunner().invoke(app, ["train", "--acts", str(store), "--out", str(tmp_path / "sae"),
                                      "--import-sae", str(tmp_path / "sp")])
    assert result.exit_code == 0, result.output
    assert load_sae(tmp_path / "sae")[0].W_enc.dtype == torch.float32


@pytest.mark.parametrize("extra, message", [({"transcode": True}, "transcode=true"),
                                            ({"activation": "groupmax"}, "activation 'topk'"),
                                            ({"skip_connection": True}, "skip_connection")])
def test_unsupported_variants_are_refused(tmp_path, extra, message):
    sparsify_folder(tmp_path / "sp", **extra)
    with pytest.raises(Vs2Error, match=message):
        read_sparsify(tmp_path / "sp")


def test_unknown_formats_get_a_clear_error(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "cfg.json").write_text(json.dumps({"architecture": "jumprelu"}))
    with pytest.raises(Vs2Error, match="unknown SAE format"):
        read_sparsify(tmp_path / "other")
    sparsify_folder(tmp_path / "sp")
    with pytest.raises(Vs2Error, match="sparsify checkpoint.*--import-sae"):
        load_sae(tmp_path / "sp")
