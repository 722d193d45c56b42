"""Several jobs' graphs run as one batch (`execute_batch`): each job gets what it gets alone, fails alone, is cancelled
alone, and cannot reach another job's rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from ndif_jupyter import Model
from ndif_jupyter.errors import ExecutionError, NotInBatch, RunCancelled
from ndif_jupyter.execution.executor import execute, execute_batch
from ndif_jupyter.execution.merging import batch_key, merge
from ndif_jupyter.ir.graph import Graph
from ndif_jupyter.ir.result import ExecutionResult

SHORT = "Hello world"
MIDDLE = "The Eiffel Tower is in"
LONG = "The Eiffel Tower is in the city of Paris, and"


class Job:
    """A block recorded and run alone in the kernel: its graph, and what it saved alone (by node id)."""

    def __init__(self, graph: Graph, saved: dict[int, Any], output: torch.Tensor | None):
        self.graph = graph
        self.saved = saved
        self.output = output


def record(model: Model, kind: str, body: Callable[[Any], list], **options: Any) -> Job:
    opener = model.trace if kind == "trace" else model.generate
    with opener(**options) as block:
        proxies = body(block)
    output = block.output if kind == "generate" else None
    return Job(block.graph(), {proxy.node_id: proxy.value for proxy in proxies}, output)


def assert_same_as_alone(job: Job, outcome: Any) -> None:
    assert isinstance(outcome, ExecutionResult), f"the job failed in the batch: {outcome}"
    assert set(outcome.saved) == set(job.saved)
    for node_id, value in job.saved.items():
        assert_close(outcome.saved[node_id], value, rtol=1e-5, atol=1e-5)
    if job.output is not None:
        assert torch.equal(outcome.output_ids, job.output), (outcome.output_ids, job.output)


def layer_path(model: Model):
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def trace_jobs(model: Model) -> list[Job]:
    layers = layer_path(model)

    def one_prompt(tracer):
        with tracer.invoke(SHORT):
            return [layers[0].output.save(), layers[1].output.save(), layers[-1].output.save()]

    def two_invokes_with_an_edit(tracer):
        with tracer.invoke(LONG):
            layers[1].output[0][:, -1] = 0
            first = model.lm_head.output.save()
        with tracer.invoke([SHORT, MIDDLE]):
            second = layers[2].output[0].mean(-1).save()
            logits = model.lm_head.output[:, -1].softmax(-1).save()
        return [first, second, logits]

    def steering(tracer):
        with tracer.invoke(MIDDLE):
            layers[0].output[0][:] += 0.5
            return [model.lm_head.output.save()]

    def conditional(tracer):
        with tracer.invoke(LONG):
            norm = layers[0].output.norm()
            with tracer.cond(norm > 0):
                layers[1].output[:, -1] = 0
            with tracer.cond(norm < 0):
                layers[2].output[:] = 0
            top = model.lm_head.output[0, -1].argmax().item()
            return [model.lm_head.output[:, -1, top].save()]

    return [
        record(model, "trace", one_prompt),
        record(model, "trace", two_invokes_with_an_edit),
        record(model, "trace", steering),
        record(model, "trace", conditional),
    ]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_merged_traces_equal_each_job_alone(family, request):
    model: Model = request.getfixturevalue(family)
    jobs = trace_jobs(model)
    assert len({batch_key(job.graph) for job in jobs}) == 1
    merged, parts = merge([job.graph for job in jobs])
    assert merged.batch_size == 6 and [part.first_row for part in parts] == [0, 1, 4, 5]
    outcomes = execute_batch([job.graph for job in jobs], model.dispatch())
    for job, outcome in zip(jobs, outcomes):
        assert_same_as_alone(job, outcome)


def generation_jobs(model: Model, **sampling: Any) -> list[Job]:
    layers = layer_path(model)

    def every_step(prompts, steps):
        def body(generator):
            saved = []
            with generator.invoke(prompts) as invoker:
                for step in range(steps):
                    if step:
                        invoker.next()
                    saved.append(layers[-1].output[0][:, -1].save())
            return saved

        return body

    def two_invokes(generator):
        with generator.invoke(LONG) as invoker:
            layers[0].output[0][:, -1] *= 2
            first = model.lm_head.output.save()
            invoker.next()
        with generator.invoke(SHORT):
            second = layers[1].output[0].save()
        return [first, second]

    return [
        record(model, "generate", every_step(SHORT, 3), max_new_tokens=3, **sampling, **_seed(sampling, 1)),
        record(model, "generate", two_invokes, max_new_tokens=8, **sampling, **_seed(sampling, 2)),
        record(model, "generate", every_step([MIDDLE, LONG], 5), max_new_tokens=5, **sampling, **_seed(sampling, 3)),
    ]


def _seed(sampling: dict, seed: int) -> dict:
    return {"seed": seed} if sampling.get("do_sample") else {}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_merged_greedy_generations_equal_each_job_alone(family, request):
    model: Model = request.getfixturevalue(family)
    jobs = generation_jobs(model, do_sample=False)
    outcomes = execute_batch([job.graph for job in jobs], model.dispatch())
    for job, outcome in zip(jobs, outcomes):
        assert_same_as_alone(job, outcome)
    assert [outcome.forward_calls for outcome in outcomes] == [3, 8, 5]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_seeded_sampling_draws_each_jobs_own_tokens_in_a_batch(family, request):
    model: Model = request.getfixturevalue(family)
    jobs = generation_jobs(model, do_sample=True, temperature=2.0, top_k=40)
    outcomes = execute_batch([job.graph for job in jobs], model.dispatch())
    for job, outcome in zip(jobs, outcomes):
        assert_same_as_alone(job, outcome)
    again = execute(jobs[0].graph, model.dispatch())
    assert torch.equal(again.output_ids, jobs[0].output), "a seed samples the same tokens run after run"


def failing_job(model: Model) -> tuple[Graph, ExecutionError]:
    """A job whose index is computed at run time and is out of range (so tracing cannot refuse it), and its error
    alone."""
    with pytest.raises(ExecutionError) as alone:
        with model.trace() as tracer:
            with tracer.invoke(SHORT):
                hidden = layer_path(model)[0].output
                far = (hidden[0, 0, 0] * 0 + 10_000).long()
                hidden.index_select(-1, far.reshape(1)).save()
    return tracer.graph(), alone.value


def test_a_failing_job_fails_alone_and_the_others_finish(gpt2: Model):
    jobs = trace_jobs(gpt2)
    failing, alone = failing_job(gpt2)
    outcomes = execute_batch([jobs[0].graph, failing, jobs[1].graph, jobs[2].graph], gpt2.dispatch())
    assert isinstance(outcomes[1], ExecutionError)
    assert outcomes[1].message == alone.message and outcomes[1].source == alone.source
    for job, outcome in zip(jobs, [outcomes[0], *outcomes[2:]]):
        assert_same_as_alone(job, outcome)


def test_a_cancelled_job_ends_alone_in_a_running_batch(llama: Model):
    jobs = generation_jobs(llama, do_sample=False)
    forwards = []
    outcomes = execute_batch(
        [job.graph for job in jobs],
        llama.dispatch(),
        on_forward=forwards.append,
        job_stopped=lambda i: i == 1 and len(forwards) >= 2,
    )
    assert isinstance(outcomes[1], RunCancelled)
    assert_same_as_alone(jobs[0], outcomes[0])
    assert_same_as_alone(jobs[2], outcomes[2])
    assert len(forwards) == 5, "the batch ends with its longest remaining job"


def test_a_job_cannot_write_into_another_jobs_rows(gpt2: Model):
    """Every setter and in-place operation aimed at the whole value a job sees touches only that job's rows."""
    layers = gpt2.transformer.h

    def attacker(tracer):
        with tracer.invoke(SHORT):
            layers[0].output = torch.zeros(1, 2, 64)
            layers[0].input = torch.ones(1, 2, 64)
            args, kwargs = layers[2].inputs
            layers[2].inputs = ((torch.full((1, 2, 64), 3.0), args[1], args[2], args[3]), kwargs)
            hidden = layers[1].output
            hidden[:] = 7
            hidden.zero_()
            hidden.fill_(1.0)
            hidden.add_(1.0)
            hidden.mul_(3.0)
            hidden.sub_(1.0)
            hidden.div_(2.0)
            hidden.neg_()
            hidden.abs_()
            hidden.clamp_(-1, 9)
            hidden.masked_fill_(hidden > 0, 5.0)
            hidden.index_fill_(-1, torch.tensor([0, 1]), -3.0)
            hidden.scatter_(-1, torch.zeros(1, 2, 1, dtype=torch.long), 11.0)
            hidden.copy_(torch.full((1, 2, 64), 2.0))
            hidden.view(-1)[:] = 4
            hidden.reshape(-1, 64).transpose(0, 1)[:] = 6
            hidden += 1
            hidden *= 2
            gpt2.transformer.ln_f.output[:] = 0
            gpt2.lm_head.output.normal_()
            return [layers[1].output.save(), gpt2.transformer.ln_f.output.save()]

    victims = trace_jobs(gpt2)
    bad = record(gpt2, "trace", attacker)
    graphs = [victims[0].graph, bad.graph, victims[1].graph]
    outcomes = execute_batch(graphs, gpt2.dispatch())
    assert_same_as_alone(victims[0], outcomes[0])
    assert_same_as_alone(victims[1], outcomes[2])
    assert_same_as_alone(bad, outcomes[1])


def test_a_job_replacing_what_the_batch_shares_is_sent_to_run_alone(gpt2: Model):
    """A module's inputs hold parts without rows (the key-value cache): replacing one would reach every job."""

    def drops_the_cache(tracer):
        with tracer.invoke(SHORT):
            args, kwargs = gpt2.transformer.h[1].inputs
            gpt2.transformer.h[1].inputs = ((args[0], None, args[2], args[3]), kwargs)
            return [gpt2.lm_head.output.save()]

    victims = trace_jobs(gpt2)
    alone = record(gpt2, "trace", drops_the_cache)
    outcomes = execute_batch([victims[0].graph, alone.graph, victims[1].graph], gpt2.dispatch())
    assert isinstance(outcomes[1], NotInBatch) and "runs alone" in outcomes[1].message
    assert_same_as_alone(victims[0], outcomes[0])
    assert_same_as_alone(victims[1], outcomes[2])
