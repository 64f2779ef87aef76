"""The projection head's inference form (BatchNorm folded in) and the pool pass's precision."""

from __future__ import annotations

import pytest
import torch

from labeltool.models import heads
from labeltool.models.heads import FoldedHead, ProjectionHead, fold_head, resolve_precision

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_head(seed: int = 0) -> ProjectionHead:
    """A small head whose BatchNorm has running statistics and an affine part away from identity."""
    torch.manual_seed(seed)
    head = ProjectionHead(24, 6, hidden_dim=16, dropout=0.3)
    head.train()
    with torch.no_grad():
        for _ in range(5):
            head(torch.randn(32, 24) * 3 + 1)
        head.net[1].weight.uniform_(0.5, 2.0)
        head.net[1].bias.uniform_(-1.0, 1.0)
    return head.eval()


def test_the_folded_head_computes_what_the_module_computes() -> None:
    head = trained_head()
    x = torch.randn(50, 24, dtype=torch.float64).to(torch.float16)
    with torch.no_grad():
        want = head(x)
    folded = fold_head(head, torch.float32)
    assert isinstance(folded, FoldedHead) and folded.w1.dtype == torch.float32
    torch.testing.assert_close(folded(x), want, rtol=1e-5, atol=1e-5)
    fast = fold_head(head)  # bfloat16 first product
    assert fast.w1.dtype == torch.bfloat16 and fast(x).dtype == torch.float32
    assert float((fast(x) - want).norm() / want.norm()) < 1e-2


def test_folding_leaves_the_head_as_it_was() -> None:
    head = trained_head()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    fold_head(head)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, "bfloat16"), (False, True, "bfloat16"), (False, False, "float32")])
def test_auto_precision_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool,
                                            expected: str) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_missing_cpu_probe_means_no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert not heads.native_bf16_available()


def test_resolve_precision() -> None:
    assert resolve_precision("float32", torch.device("cpu")) == "float32"
    assert resolve_precision("bfloat16", torch.device("cpu")) == "bfloat16"
    assert resolve_precision("auto", torch.device("cuda")) == "float32"  # a GPU's pass is bound by the copy
    native = heads.native_bf16_available()
    assert resolve_precision("auto", torch.device("cpu")) == ("bfloat16" if native else "float32")
    with pytest.raises(ValueError, match="valid: float32, bfloat16, auto"):
        resolve_precision("half", torch.device("cpu"))
