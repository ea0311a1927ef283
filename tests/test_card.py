"""The model card (card.py): licences, the weights checksum, and records rendered atomically."""

from __future__ import annotations

import json

import torch
from test_runtime import manifest_dict

from vs2_export import card
from vs2_export.clip import weights_sha256
from vs2_export.runtime import contract


def test_licences_are_known_only_where_the_source_is():
    assert card.licence_of("openai", "ViT-B-32")[0] == "MIT"
    assert card.licence_of("laion2b_s34b_b79k", "ViT-B-32")[0] == "MIT"
    assert card.licence_of("metaclip_400m", "ViT-B-32")[0] == "CC-BY-NC-4.0"
    assert card.licence_of("some_new_tag", "ViT-B-32")[0] == "unknown"
    assert card.licence_of("/models/clip.safetensors", "ViT-B-32")[0] == "unknown"
    assert card.licence_of("none", "ViT-B-32")[0] == "none"
    assert "random" in card.licence_of("none", "ViT-B-32")[1]


def test_weights_checksum_depends_on_names_and_values_only():
    """The card names the weights with clip.weights_sha256, the manifest's checksum."""
    def model(**tensors):
        m = torch.nn.Module()
        for name, value in tensors.items():
            m.register_buffer(name, value)
        return m
    a = model(w=torch.ones(2, 3), b=torch.zeros(3))
    b = model(b=torch.zeros(3), w=torch.ones(2, 3))
    assert weights_sha256(a) == weights_sha256(b)
    assert weights_sha256(a) != weights_sha256(model(w=torch.ones(2, 3), c=torch.zeros(3)))
    a.w[0, 0] = 2
    assert weights_sha256(a) != weights_sha256(b)
    assert not hasattr(card, "weights_sha256")  # one checksum, in clip.py


def test_records_rewrite_the_card_and_a_new_export_starts_afresh(tmp_path):
    (tmp_path / contract.MANIFEST_FILE).write_text(json.dumps(manifest_dict()))
    card.reset(tmp_path)
    text = (tmp_path / contract.CARD_FILE).read_text()
    assert "Not verified yet" in text and "Not measured yet" in text
    report = {"precision": "int8", "verdict": "FAIL", "n_images": 64,
              "checks": [{"name": "logits.top1_agreement", "passed": False}]}
    card.record_verify(tmp_path, report, "cpu")
    card.record_bench(tmp_path, {"provider": "cpu", "threads": 2, "rows": [
        {"name": "vs2 fused fp32", "batches": {"1": {"ms_per_image": 3.25}}},
        {"name": "ablation: full last block", "batches": {"1": {"ms_per_image": 3.5}}}]})
    text = (tmp_path / contract.CARD_FILE).read_text()
    assert "| int8 | cpu | **FAIL** | 64 | logits.top1_agreement |" in text
    assert "| vs2 fused fp32 | 1 | 3.25 |" in text and "ablation" not in text
    card.reset(tmp_path)
    assert "Not verified yet" in (tmp_path / contract.CARD_FILE).read_text()


def test_recording_outside_an_export_folder_writes_nothing(tmp_path):
    card.record_verify(tmp_path, {"precision": "fp32", "verdict": "PASS", "n_images": 1}, "cpu")
    assert list(tmp_path.iterdir()) == []
