"""TopKSAE: selection, sparsity, shapes, decoder norm, save/load (docs/method.md section 2)."""

import pytest
import torch

from vs2_export.config import SAEConfig
from vs2_export.errors import Vs2Error
from vs2_export.sae import TopKSAE, load_sae, save_sae


@pytest.fixture
def sae():
    torch.manual_seed(0)
    model = TopKSAE(SAEConfig(d=32, expansion=4, k=8))
    with torch.no_grad():
        model.b_enc.normal_()  # make some pre-activations negative and some positive
    return model


def test_encode_selects_k_sorted_latents_per_row(sae):
    h = torch.randn(5, 32)
    values, indices = sae.encode(h)
    assert values.shape == indices.shape == (5, 8)
    assert indices.dtype == torch.int64
    assert torch.all(values[:, :-1] >= values[:, 1:])
    pre = sae.pre_activations(h)
    assert torch.equal(values, pre.gather(1, indices))
    assert torch.all(values >= pre.topk(8).values.min(-1, keepdim=True).values)


def test_code_has_at_most_k_nonzeros_after_relu(sae):
    values, indices = sae.encode(torch.randn(64, 32))
    dense = torch.zeros(64, sae.cfg.n).scatter(1, indices, values)
    assert int((dense != 0).sum(-1).max()) <= 8
    assert torch.all(dense >= 0)


def test_sparse_decode_equals_dense_matrix_product(sae):
    h = torch.randn(7, 32)
    values, indices = sae.encode(h)
    dense = torch.zeros(7, sae.cfg.n).scatter(1, indices, values)
    expected = dense @ sae.W_dec + sae.b_pre
    assert sae(h).shape == (7, 32)
    torch.testing.assert_close(sae.decode(values, indices), expected, rtol=1e-5, atol=1e-5)


def test_decoder_rows_are_unit_norm_and_start_as_encoder_transpose(sae):
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(sae.cfg.n))
    enc_dirs = sae.W_enc / sae.W_enc.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(sae.W_dec, enc_dirs)


def test_parallel_gradient_is_removed(sae):
    sae(torch.randn(16, 32)).pow(2).sum().backward()
    sae.remove_parallel_grads()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert (parallel.abs() / sae.W_dec.grad.norm(dim=-1).clamp_min(1e-12)).max() < 1e-5


def test_save_load_round_trip_is_bit_exact(sae, tmp_path):
    checksum = save_sae(sae, tmp_path / "sae")
    loaded, loaded_checksum = load_sae(tmp_path / "sae")
    assert loaded_checksum == checksum
    for name, tensor in sae.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert loaded.cfg == sae.cfg


def test_load_refuses_missing_and_mismatched_files(sae, tmp_path):
    with pytest.raises(Vs2Error, match="SAE config"):
        load_sae(tmp_path / "nothing")
    save_sae(sae, tmp_path / "sae")
    cfg = (tmp_path / "sae" / "cfg.json")
    cfg.write_text(cfg.read_text().replace('"k": 8', '"k": 4').replace('"d": 32', '"d": 16'))
    with pytest.raises(Vs2Error, match="do not match"):
        load_sae(tmp_path / "sae")


def test_config_rejects_k_larger_than_n():
    with pytest.raises(Vs2Error, match="k: expected"):
        SAEConfig(d=4, expansion=2, k=9)
