"""h-space hooks: capture, add, replace, run_until; handles always removed; torch.func compatible."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention

from diffgeo.models.hooks import add_to_output, capture, get_module, output_bytes, replace_output, run_until
from conftest import tiny_unet_config


@pytest.fixture(scope="module")
def unet(device):
    torch.manual_seed(0)
    return UNet2DModel(**tiny_unet_config()).eval().requires_grad_(False).to(device)


def n_hooks(module):
    return len(module._forward_hooks)


def inputs(device: torch.device):
    """x (2, 3, 16, 16) and t (2,), drawn on the CPU and moved to ``device`` (the unet's)."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 16, 16, generator=g).to(device), torch.tensor([100, 600], device=device)


def test_capture_equals_manual_mid_block(unet):
    x, t = inputs(unet.device)
    # Independent reference: run the encoder half by hand.
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    s = unet.conv_in(x)
    for block in unet.down_blocks:
        s, _ = block(hidden_states=s, temb=emb)
    reference = unet.mid_block(s, emb)
    with capture(unet) as cap:
        unet(x, t)
    assert torch.allclose(cap.value, reference, atol=1e-5)
    assert torch.allclose(run_until(unet, "mid_block", x, t), reference, atol=1e-5)


def test_capture_of_tuple_output_takes_hidden_state(unet):
    x, t = inputs(unet.device)
    with capture(unet, "down_blocks.0") as cap:
        unet(x, t)
    # reference: the first down block run by hand returns (hidden state, skip states)
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    reference, _ = unet.down_blocks[0](hidden_states=unet.conv_in(x), temb=emb)
    assert cap.value.shape == (2, 16, 8, 8) and torch.allclose(cap.value, reference, atol=1e-6)


def test_add_zero_is_identity_and_add_equals_replace(unet):
    x, t = inputs(unet.device)
    base = unet(x, t).sample
    with add_to_output(unet, torch.zeros(1)):
        assert torch.allclose(unet(x, t).sample, base)
    delta = torch.randn(2, 32, 8, 8).to(x.device)
    with add_to_output(unet, delta):
        added = unet(x, t).sample
    with capture(unet) as cap:
        unet(x, t)
    with replace_output(unet, cap.value + delta):
        replaced = unet(x, t).sample
    assert torch.allclose(added, replaced, atol=1e-6)
    assert not torch.allclose(added, base, atol=1e-3)  # the edit reaches the output


def test_replace_rejects_wrong_shape(unet):
    x, t = inputs(unet.device)
    with pytest.raises(ValueError, match="shape"):
        with replace_output(unet, torch.zeros(2, 5, 8, 8)):
            unet(x, t)
    assert n_hooks(unet.mid_block) == 0


@pytest.mark.parametrize("ctx", ["capture", "add", "replace"])
def test_hooks_removed_even_when_body_raises(unet, ctx):
    mid = unet.mid_block
    before = dict(mid._forward_hooks)
    managers = {
        "capture": lambda: capture(unet),
        "add": lambda: add_to_output(unet, torch.zeros(1)),
        "replace": lambda: replace_output(unet, lambda h: h),
    }
    with pytest.raises(KeyError):
        with managers[ctx]():
            assert n_hooks(mid) == len(before) + 1
            raise KeyError("boom")
    assert dict(mid._forward_hooks) == before


def test_only_own_handle_is_removed(unet):
    foreign = unet.mid_block.register_forward_hook(lambda *a: None)
    try:
        with capture(unet):
            assert n_hooks(unet.mid_block) == 2
        assert list(unet.mid_block._forward_hooks) == [foreign.id]
    finally:
        foreign.remove()


def test_run_until_skips_the_decoder(unet):
    calls = []
    handle = unet.up_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        x, t = inputs(unet.device)
        run_until(unet, "mid_block", x, t)
        assert calls == []
        unet(x, t)
        assert calls == [1]
    finally:
        handle.remove()
    assert n_hooks(unet.mid_block) == 0


def test_run_until_under_torch_func_matches_autograd(unet):
    x, t = inputs(unet.device)
    x = x[:1]
    u = torch.randn(1, 32, 8, 8).to(x.device)
    f = lambda xx: run_until(unet, "mid_block", xx, t[:1])  # noqa: E731
    _, vjp_fn = torch.func.vjp(f, x)
    (func_grad,) = vjp_fn(u)
    xr = x.clone().requires_grad_(True)
    with capture(unet) as cap:
        unet(xr, t[:1])
    (auto_grad,) = torch.autograd.grad((cap.value * u).sum(), xr)
    assert torch.allclose(func_grad, auto_grad, atol=1e-5)
    assert n_hooks(unet.mid_block) == 0


def test_unknown_module_name(unet):
    with pytest.raises(ValueError, match="down_blocks"):
        get_module(unet, "encoder")


def test_output_bytes_counts_every_leaf_output_and_removes_its_hooks():
    # ground truth by hand: Linear(4 -> 8) and ReLU outputs of a batch of 3 in float32, plus the
    # attention-free container adding nothing: 2 * 3 * 8 * 4 bytes
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    with torch.no_grad(), output_bytes(net) as tally:
        net(torch.zeros(3, 4))
    assert tally.bytes == 2 * 3 * 8 * 4
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    with pytest.raises(RuntimeError), output_bytes(net):
        raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_output_bytes_adds_the_attention_scores(unet):
    # the tiny U-Net's encoder has one self-attention layer per attention block on 8x8 = 64 tokens;
    # its math kernel builds (B, heads, 64, 64) scores and their softmax: the tally must exceed the
    # leaf outputs by exactly that much for each Attention module called
    x, t = inputs(unet.device)
    calls = []
    hooks = [m.register_forward_hook(lambda mod, a, out: calls.append((mod.heads, out.shape)))
             for m in unet.modules() if isinstance(m, Attention)]
    try:
        with torch.no_grad(), output_bytes(unet) as tally:
            run_until(unet, "mid_block", x, t)
    finally:
        for h in hooks:
            h.remove()
    leaves = []
    leaf_hooks = [m.register_forward_hook(lambda mod, a, out: leaves.append(out.numel() * out.element_size()))
                  for m in unet.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            run_until(unet, "mid_block", x, t)
    finally:
        for h in leaf_hooks:
            h.remove()
    scores = sum(2 * shape[0] * heads * (shape[2] * shape[3]) ** 2 * 4 for heads, shape in calls)
    assert calls and tally.bytes == sum(leaves) + scores
