"""Quantizer behaviour: gradients, EMA, restarts, usage statistics, residual VQ."""

import dataclasses

import pytest
import torch

from vqaudio.config import QuantizerConfig
from vqaudio.models.quantizer import ResidualVQ, VectorQuantizer, kmeans, perplexity


def test_perplexity_uniform_and_single():
    assert perplexity(torch.ones(64)).item() == pytest.approx(64, rel=1e-5)
    one = torch.zeros(64)
    one[3] = 100
    assert perplexity(one).item() == pytest.approx(1.0)


def test_codebook_term_reaches_only_codebook_and_commitment_only_encoder():
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=8, update="loss", normalize="none", kmeans_init=False, restart_threshold=0)
    vq = VectorQuantizer(cfg, 4).train()
    z = torch.randn(32, 4, requires_grad=True)
    _, _, cb_loss, cm_loss, _ = vq(z)
    g_z, g_cb = torch.autograd.grad(cb_loss, [z, vq.codebook], allow_unused=True)
    assert g_z is None or torch.count_nonzero(g_z) == 0
    assert g_cb is not None and torch.count_nonzero(g_cb) > 0
    _, _, cb_loss, cm_loss, _ = vq(z)
    g_z, g_cb = torch.autograd.grad(cm_loss, [z, vq.codebook], allow_unused=True)
    assert g_z is not None and torch.count_nonzero(g_z) > 0
    assert g_cb is None or torch.count_nonzero(g_cb) == 0


def test_straight_through_copies_gradient():
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=8, normalize="none", kmeans_init=False, restart_threshold=0)
    vq = VectorQuantizer(cfg, 4).train()
    z = torch.randn(16, 4, requires_grad=True)
    z_q, *_ = vq(z)
    w = torch.randn_like(z_q)
    (g,) = torch.autograd.grad((z_q * w).sum(), z)
    assert torch.allclose(g, w)  # d z_q / d z = identity


def test_ema_moves_codes_toward_assigned_mean():
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=2, decay=0.5, normalize="none", kmeans_init=False, restart_threshold=0)
    vq = VectorQuantizer(cfg, 2).train()
    vq.codebook.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    vq.ema_sum.copy_(vq.codebook)
    z = torch.tensor([[3.0, 1.0], [3.0, -1.0], [-2.0, 0.0]])  # code 0 mean (3,0); code 1 mean (-2,0)
    before = vq.codebook.clone()
    for _ in range(30):
        vq(z)
    assert (vq.codebook[0] - torch.tensor([3.0, 0.0])).norm() < (before[0] - torch.tensor([3.0, 0.0])).norm() * 0.01
    assert (vq.codebook[1] - torch.tensor([-2.0, 0.0])).norm() < 0.05


def test_dead_code_is_restarted_and_ema_state_reset():
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=4, normalize="none", kmeans_init=False, restart_threshold=0.5, restart_every=5)
    vq = VectorQuantizer(cfg, 2).train()
    far = torch.tensor([100.0, 100.0])
    vq.codebook[3] = far  # never the nearest: dead
    vq.ema_sum[3] = far
    z = torch.randn(64, 2)
    for _ in range(5):
        vq(z)
        assert (vq.restarts >= 1) if int(vq.steps) == 5 else (vq.restarts == 0)  # checked every 5th step
    assert (vq.codebook[3] - far).norm() > 50  # re-seeded near the data
    assert vq.ema_count[3].item() == pytest.approx(1.0)
    codes = vq.nearest(z)
    assert torch.bincount(codes, minlength=4)[3] > 0


def test_kmeans_init_uses_data():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(100, 2) * 0.01 + 5, torch.randn(100, 2) * 0.01 - 5])
    c = kmeans(x, 2, 5)
    assert sorted(c[:, 0].round().tolist()) == [-5.0, 5.0]
    cfg = QuantizerConfig(codebook_size=2, normalize="none", restart_threshold=0)
    vq = VectorQuantizer(cfg, 2).train()
    vq(x)
    assert bool(vq.initialized)
    assert sorted(vq.codebook[:, 0].round().tolist()) == [-5.0, 5.0]


@pytest.mark.parametrize("update", ["ema", "loss"])
@pytest.mark.parametrize("normalize,lookup_dim", [("none", 0), ("layernorm", 0), ("l2", 0), ("l2", 3)])
def test_residual_vq_error_decreases_with_codebooks(update, normalize, lookup_dim):
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=16, n_q=4, update=update, normalize=normalize, lookup_dim=lookup_dim,
                          restart_threshold=0)
    if normalize == "l2" and not lookup_dim:  # unit codebooks for short residuals: refused (see ResidualVQ)
        with pytest.raises(ValueError, match="lookup_dim"):
            ResidualVQ(cfg, 8)
        ResidualVQ(dataclasses.replace(cfg, n_q=1), 8)  # one stage is fine
        return
    rvq = ResidualVQ(cfg, 8)
    z_e = torch.randn(4, 8, 50)
    rvq.train()
    for _ in range(3 if lookup_dim == 0 else 1):
        rvq(z_e)  # k-means init + a few EMA steps
    rvq.eval()
    target = rvq._normalize(z_e).transpose(1, 2)  # (B, D, T) in lookup space
    codes = rvq.quantize(z_e)
    assert codes.shape == (4, 4, 50) and codes.min() >= 0 and codes.max() < 16
    if lookup_dim:  # projections are untrained: only check shapes and determinism
        assert torch.equal(codes, rvq.quantize(z_e))
        return
    errs = [(rvq.dequantize(codes[:, :n]) - target).pow(2).mean().item() for n in range(1, 5)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs


def test_quantizer_dropout_masks_later_codebooks():
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=8, n_q=3, quantizer_dropout=1.0, restart_threshold=0)
    rvq = ResidualVQ(cfg, 4).train()
    z_e = torch.randn(16, 4, 10)
    full = dataclasses.replace(cfg, quantizer_dropout=0.0)
    rvq_full = ResidualVQ(full, 4)
    rvq_full.load_state_dict(rvq.state_dict())
    out = rvq(z_e)
    rvq_full.train()
    ref = rvq_full(z_e)
    # with dropout forced on, some utterances use fewer codebooks -> different z_q
    diff = (out.z_q - ref.z_q).abs().amax(dim=(1, 2))
    assert (diff > 1e-6).any()
    assert out.codes.shape == (16, 3, 10)


def test_usage_statistics_reported():
    torch.manual_seed(0)
    rvq = ResidualVQ(QuantizerConfig(codebook_size=8, n_q=2), 4).train()
    out = rvq(torch.randn(2, 4, 40))
    assert out.perplexity.shape == (2,) and out.codes_used.shape == (2,)
    assert 1 <= out.perplexity[0] <= 8 and 1 <= out.codes_used[0] <= 8


def test_a_code_restarted_this_step_keeps_its_vector_for_this_steps_frames():
    """Restarts come after z_q is taken: frames of a code re-seeded in this very step are quantized
    exactly as without the restart (not to another frame's z), and the code itself is re-seeded."""
    torch.manual_seed(0)
    base = dict(codebook_size=8, normalize="none", kmeans_init=False)
    with_restart = VectorQuantizer(QuantizerConfig(**base, restart_threshold=1.0), 4).train()
    without = VectorQuantizer(QuantizerConfig(**base, restart_threshold=0), 4).train()
    without.load_state_dict(with_restart.state_dict())
    z = torch.randn(64, 4)
    codes = with_restart.nearest(z)
    rare = int(torch.bincount(codes, minlength=8).argmin())  # make a code "rarely used" so far ...
    z[:2] = with_restart.codebook[rare] + 0.01  # ... but assigned in this batch
    for vq in (with_restart, without):
        vq.usage.fill_(8.0)
        vq.usage[rare] = 0.0
    zq_r, codes_r, *_ = with_restart(z)
    zq_n, codes_n, *_ = without(z)
    assert torch.equal(codes_r, codes_n) and int(codes_r[0]) == rare
    torch.testing.assert_close(zq_r, zq_n, rtol=0, atol=0)
    assert not torch.allclose(with_restart.codebook[rare], without.codebook[rare])  # it was re-seeded


def test_a_dropped_stage_still_leaves_the_true_residual_to_the_next():
    """Quantizer dropout only masks what the decoder sees: every stage's codes are those of a full pass,
    and each utterance's z_q is the sum of its first n' stages for some n'."""
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=8, n_q=3, quantizer_dropout=1.0, restart_threshold=0, kmeans_init=False,
                          update="loss")
    rvq = ResidualVQ(cfg, 4).train()
    rvq_full = ResidualVQ(dataclasses.replace(cfg, quantizer_dropout=0.0), 4).train()
    rvq_full.load_state_dict(rvq.state_dict())
    z_e = torch.randn(16, 4, 10)
    out, ref = rvq(z_e), rvq_full(z_e)
    assert torch.equal(out.codes, ref.codes)
    prefix = torch.stack([rvq.dequantize(out.codes[:, :n]) for n in range(1, 4)])  # (3, B, D, T)
    err = (prefix - out.z_q.detach()[None]).abs().amax(dim=(2, 3)).amin(0)  # (B,) best-matching prefix
    assert err.max() < 1e-5
    assert (prefix[-1] - out.z_q.detach()).abs().amax(dim=(1, 2)).max() > 1e-3  # some utterances were cut
