"""The step model: exact step costs, limits, chunked prefill, preemption, priority, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow.sim.engine import Engine, Sequence
from benchflow.sim.virtual import VirtualRequest, run_closed_loop, run_open_loop

from .helpers import tiny_config


def _drain(engine: Engine, max_steps: int = 10_000) -> dict[str, list[tuple[float, int]]]:
    """Steps until idle; (time, index) of every token per request, checking invariants each step."""
    now, tokens = 0.0, {}
    for _ in range(max_steps):
        result = engine.step()
        if result is None:
            return tokens
        assert 0 <= engine.used_blocks <= engine.config.num_gpu_blocks
        assert engine.num_running <= engine.config.max_num_seqs
        now += result.duration_s
        for out in result.outputs:
            tokens.setdefault(out.request_id, []).append((now, out.index))
    raise AssertionError("engine did not drain")


def test_step_durations_follow_the_cost_model():
    engine = Engine(tiny_config())
    engine.add(Sequence("r", prompt_tokens=8, max_tokens=3))
    durations = []
    while (result := engine.step()) is not None:
        durations.append(result.duration_s)
    # prefill: overhead + 8 prefill tokens + 1 seq + 8 KV tokens; then decodes reading 9, 10 KV tokens
    assert durations == pytest.approx([1 + 0.08 + 0.1 + 0.008, 1 + 0.1 + 0.009, 1 + 0.1 + 0.010])


def test_time_scale_multiplies_every_step():
    slow = run_open_loop(tiny_config(time_scale=2.0), [VirtualRequest(8, 5)])
    fast = run_open_loop(tiny_config(), [VirtualRequest(8, 5)])
    assert slow.duration_s == pytest.approx(2 * fast.duration_s)


def test_chunked_prefill_splits_a_long_prompt_across_steps():
    chunked = Engine(tiny_config(max_num_batched_tokens=16))
    chunked.add(Sequence("r", prompt_tokens=40, max_tokens=2))
    first_token_step = next(i for i in range(1, 10) if chunked.step().outputs)
    assert first_token_step == 3  # 16 + 16 + 8 prompt tokens

    whole = Engine(tiny_config(max_num_batched_tokens=16, enable_chunked_prefill=False))
    whole.add(Sequence("r", prompt_tokens=40, max_tokens=2))
    assert whole.step().outputs  # admitted whole into an otherwise empty step


def test_step_budget_limits_admission_without_chunking():
    engine = Engine(tiny_config(max_num_batched_tokens=16, enable_chunked_prefill=False))
    engine.add(Sequence("a", prompt_tokens=10, max_tokens=2))
    engine.add(Sequence("b", prompt_tokens=10, max_tokens=2))
    first = engine.step()
    assert [o.request_id for o in first.outputs] == ["a"]
    assert engine.num_waiting == 1


def test_max_num_seqs_caps_the_batch():
    engine = Engine(tiny_config(max_num_seqs=2, num_gpu_blocks=64, max_model_len=64))
    for i in range(5):
        engine.add(Sequence(str(i), prompt_tokens=4, max_tokens=4))
    engine.step()
    assert (engine.num_running, engine.num_waiting) == (2, 3)
    tokens = _drain(engine)
    assert sorted(tokens) == [str(i) for i in range(5)]


def test_full_kv_cache_preempts_and_recomputes_without_losing_tokens():
    engine = Engine(tiny_config(num_gpu_blocks=16, block_size=4))  # 64 KV tokens
    for i in range(4):
        engine.add(Sequence(str(i), prompt_tokens=12, max_tokens=10))  # 22 tokens each at the end
    tokens = _drain(engine)
    assert engine.num_preemptions_total > 0
    for rid in map(str, range(4)):
        assert [i for _, i in tokens[rid]] == list(range(10))  # every token once, in order
    assert engine.used_blocks == 0


def test_fcfs_serves_in_arrival_order_and_priority_by_priority():
    fcfs = Engine(tiny_config(max_num_seqs=1))
    prio = Engine(tiny_config(max_num_seqs=1, scheduling_policy="priority"))
    for engine in (fcfs, prio):
        engine.add(Sequence("low", prompt_tokens=4, max_tokens=2, priority=5))
        engine.add(Sequence("high", prompt_tokens=4, max_tokens=2, priority=0))
    assert fcfs.step().outputs[0].request_id == "low"
    assert prio.step().outputs[0].request_id == "high"


@pytest.mark.parametrize("policy, first_done", [("priority", "important"), ("fcfs", "background")])
def test_preemption_victim_follows_the_policy(policy, first_done):
    engine = Engine(tiny_config(scheduling_policy=policy, num_gpu_blocks=10, block_size=4))  # 40 KV tokens
    engine.add(Sequence("background", prompt_tokens=14, max_tokens=10, priority=9))
    first = engine.step()  # background is running before the important request arrives
    engine.add(Sequence("important", prompt_tokens=14, max_tokens=10, priority=0))
    tokens = _drain(engine)
    tokens["background"].insert(0, (0.0, first.outputs[0].index))
    assert engine.num_preemptions_total > 0
    done = {rid: t[-1][0] for rid, t in tokens.items()}
    assert min(done, key=done.get) == first_done


def test_abort_frees_the_kv_cache():
    engine = Engine(tiny_config())
    engine.add(Sequence("r", prompt_tokens=20, max_tokens=10))
    engine.step()
    assert engine.kv_cache_usage > 0
    assert engine.abort("r")
    assert engine.used_blocks == 0 and not engine.has_work
    assert not engine.abort("r")


def test_requests_that_cannot_fit_max_model_len_are_refused():
    engine = Engine(tiny_config(max_model_len=32))
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add(Sequence("r", prompt_tokens=30, max_tokens=5))


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 20), st.integers(0, 3)), min_size=1, max_size=12),
    max_num_seqs=st.integers(1, 6),
    budget=st.integers(1, 80),
    chunked=st.booleans(),
    policy=st.sampled_from(["fcfs", "priority"]),
    extra_blocks=st.integers(0, 20),
)
def test_every_request_finishes_with_all_its_tokens(requests, max_num_seqs, budget, chunked, policy, extra_blocks):
    # capacity always fits one max_model_len sequence, as start-up guarantees
    config = tiny_config(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, enable_chunked_prefill=chunked,
                         scheduling_policy=policy, num_gpu_blocks=15 + extra_blocks, block_size=4, max_model_len=60)
    engine = Engine(config)
    for i, (prompt, out, prio) in enumerate(requests):
        engine.add(Sequence(str(i), prompt_tokens=prompt, max_tokens=out, priority=prio))
    tokens = _drain(engine)
    for i, (_, out, _) in enumerate(requests):
        assert [idx for _, idx in tokens[str(i)]] == list(range(out))
    assert engine.used_blocks == 0


def test_closed_loop_keeps_the_concurrency():
    run = run_closed_loop(tiny_config(num_gpu_blocks=64), [VirtualRequest(4, 3)] * 10, concurrency=3)
    assert len(run.requests) == 10
    assert run.output_tokens == 30
