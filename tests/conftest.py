import pytest
import torch


def random_logits(rows: int, vocab: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator) * scale


def crowded_rows(vocab: int, seed: int = 0) -> torch.Tensor:
    """Rows built to be hard: plain, constant, a tied block in one split, ties everywhere,
    masked tokens."""
    z = random_logits(5, vocab, seed)
    z[1] = 0.25
    z[2, 100:900] = z[2].max() + 1
    z[3] = z[3].round()
    z[4, ::3] = -torch.inf
    return z


def _tempered(z, tau):
    """z/τ in float64, τ a number or one value per row."""
    rows = z.shape[0]
    tau = torch.as_tensor(tau, dtype=torch.float64, device=z.device).expand(rows)
    return z.double() / tau[:, None]


def _agree_where_both_keep(q, q_reference):
    """q and q_reference renormalised on the tokens both keep agree to float32 rounding."""
    both = (q > 0) & (q_reference > 0)
    on_both = [torch.where(both, r.double(), 0.0) for r in (q, q_reference)]
    on_both = [r / r.sum(-1, keepdim=True) for r in on_both]
    torch.testing.assert_close(*on_both, atol=2e-6, rtol=1e-4)


def assert_same_support_up_to_the_top_p_cut(z, tau, p, q, q_reference, reach=1e-5):
    """q and q_reference ([rows, V], of decoders whose support includes top-p's cut on
    softmax(z/τ)) keep the same tokens but those at the cut, and agree on the tokens both
    keep, renormalised there. Top-p keeps x iff the mass strictly above it, F(x) =
    Σ_{x' > x} softmax(z/τ)_{x'}, is < p; float32 sums put a kernel's cut up to rounding
    away, so a token kept by one of the two only must have |F(x) − p| ≤ reach (float64)."""
    x = _tempered(z, tau)
    probs = torch.softmax(x, dim=-1)
    p = torch.as_tensor(p, dtype=torch.float64, device=z.device).expand(z.shape[0])
    differ = (q > 0) != (q_reference > 0)
    for row, token in differ.nonzero().tolist():  # a handful of tokens at most
        upper = float(probs[row][x[row] > x[row, token]].sum())
        assert abs(upper - float(p[row])) <= reach, (row, token, upper, float(p[row]))
    _agree_where_both_keep(q, q_reference)


def _first_proposal_inside_kept(inside, outside, proposals, kept):
    """Per row, `kept` is the first of `proposals` [rows, R] inside the set, or −1 when none
    is; a proposal neither surely `inside` nor surely `outside` (at the set's edge, up to
    float32 rounding) may count either way."""
    count = proposals.shape[1]
    matches = (proposals == kept[:, None]) & (kept[:, None] >= 0)
    first = torch.where(matches.any(1), matches.int().argmax(1), count)
    for row in range(proposals.shape[0]):
        chosen = int(first[row])
        assert not inside[row, :chosen].any(), (row, chosen, proposals[row], int(kept[row]))
        if chosen < count:
            assert not outside[row, chosen], (row, chosen, proposals[row])
        else:
            assert int(kept[row]) == -1, (row, int(kept[row]), proposals[row])


def assert_first_proposal_inside_the_top_p_cut_kept(z, tau, p, proposals, kept, reach=1e-5):
    """Top-p's rejection sampler kept, per row, the first of its proposals ([rows, R]) that
    is inside the nucleus of softmax(z/τ), or −1 when none is: proposal x is inside iff
    F(x) = Σ_{x' > x} softmax(z/τ)_{x'} < p (float64), up to float32 rounding, so one with
    |F(x) − p| ≤ reach may count either way."""
    x = _tempered(z, tau)
    probs = torch.softmax(x, dim=-1)
    p = torch.as_tensor(p, dtype=torch.float64, device=z.device).reshape(-1).expand(len(z))
    x_proposed = x.gather(1, proposals)
    upper = ((x[:, None, :] > x_proposed[:, :, None]) * probs[:, None, :]).sum(-1)
    inside = upper < p[:, None] - reach
    outside = upper > p[:, None] + reach
    _first_proposal_inside_kept(inside, outside, proposals, kept)


def _typical_radius(z, tau, mass):
    # Each token's deviation d = |−log p − H| and, per row, the smallest d whose set holds
    # `mass` (float64).
    log_p = torch.log_softmax(_tempered(z, tau), dim=-1)
    probs = log_p.exp()
    deviation = (-log_p + torch.special.xlogy(probs, probs).sum(-1, keepdim=True)).abs()
    order = deviation.argsort(-1)
    mass = torch.as_tensor(mass, dtype=torch.float64, device=z.device).expand(z.shape[0])
    reached = (probs.gather(-1, order).cumsum(-1) < mass[:, None]).sum(-1, keepdim=True)
    radius = deviation.gather(-1, order).gather(-1, reached.clamp(max=z.shape[-1] - 1))
    return deviation, radius


def assert_first_proposal_inside_the_typical_set_kept(z, tau, mass, proposals, kept,
                                                      reach=1e-4):  # fmt: skip
    """As `assert_first_proposal_inside_the_top_p_cut_kept`, for the locally typical set:
    a proposal is inside iff its deviation is at most the set's radius r*, and one with
    |d − r*| ≤ reach may count either way."""
    deviation, radius = _typical_radius(z, tau, mass)
    proposed = deviation.gather(1, proposals)
    inside = proposed < radius - reach
    outside = proposed > radius + reach
    _first_proposal_inside_kept(inside, outside, proposals, kept)


def assert_same_support_up_to_the_typical_edge(z, tau, mass, q, q_reference, reach=1e-4):
    """As `assert_same_support_up_to_the_top_p_cut`, for the locally typical set: it keeps
    the tokens whose deviation d = |−log p − H| is at most r*, the smallest d whose set holds
    `mass`; a token kept by one of q and q_reference only must have |d − r*| ≤ reach
    (float64)."""
    deviation, radius = _typical_radius(z, tau, mass)
    differ = (q > 0) != (q_reference > 0)
    distance = (deviation - radius).abs()[differ]
    assert (distance <= reach).all(), (differ.sum(-1), distance.max())
    _agree_where_both_keep(q, q_reference)


def assert_draws_are_the_two_step_picks(z, tau, tokens, first, second, block):
    """Each of `tokens` [rows, draws] (from q ∝ exp(z/τ), z [rows, V]) against the draw's two
    steps in float64: with draw d of row r's uniforms first/second[r·draws + d], the block
    whose running mass passes u₁·Σ, then the token whose running mass inside the block
    passes u₂ times the block's. A pick whose target lies within 10⁻⁵ of the row's mass of
    a block's edge, or 2·10⁻⁶ of the block's of a token's, is left out: the kernel's float32
    q and block sums may round it either way. At most 2% may be left out."""
    rows, draws = tokens.shape
    vocab = z.shape[1]
    blocks = -(-vocab // block)
    q = torch.exp((z.double() - z.double().max(1, keepdim=True).values) / tau)
    q = torch.nn.functional.pad(q, (0, blocks * block - vocab)).view(rows, blocks, block)
    block_mass = q.sum(2)
    checked = 0
    for row in range(rows):
        running = block_mass[row].cumsum(0)
        for draw in range(draws):
            u1, u2 = float(first[row * draws + draw]), float(second[row * draws + draw])
            target = u1 * float(running[-1])
            picked = int(torch.searchsorted(running, target, right=True))
            inside = q[row, picked].cumsum(0)
            place = u2 * float(inside[-1])
            token = int(torch.searchsorted(inside, place, right=True))
            near = (running - target).abs().min() <= 1e-5 * running[-1] or (
                (inside - place).abs().min() <= 2e-6 * inside[-1]
            )
            if near:
                continue
            checked += 1
            assert int(tokens[row, draw]) == picked * block + token, (row, draw, tokens[row])
    assert checked >= 0.98 * rows * draws, (checked, rows * draws)


def shared_data(name: str):
    """Path of a file in ../shared/data (or $DECOPTIM_DATA): CI must have it, others skip."""
    import os
    from pathlib import Path

    import pytest

    root = Path(
        os.environ.get("DECOPTIM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    path = root / name
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"test data {path} is missing (set DECOPTIM_DATA)")
        pytest.skip(f"test data {path} not present")
    return path


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 1, **ids):
    """A small randomly initialised Llama (seeded), for fast unit tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **ids,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_arith_model(tmp_path_factory):
    """A randomly initialised model with the arith tokenizer, saved like a trained one."""
    from transformers import GenerationConfig

    from decoptim.eval.arith_model import build_tokenizer

    tokenizer = build_tokenizer()
    model = tiny_llama(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    path = tmp_path_factory.mktemp("tiny-arith")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
