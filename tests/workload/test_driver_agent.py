"""A small multi-turn agent driver, written like tau2-bench's ``run_oss.py`` for the driver tests:
``--concurrency`` agents share ``--tasks`` tasks; each task is ``--turns`` chat requests to the
server over HTTP (stdlib ``urllib``), each re-sending the whole growing conversation. It prints
``[PROFILE] ... type=step_complete`` per turn and ``FINISHED SIMULATION: ...`` per task.

Modes: ``normal``; ``hang`` (after ``--hang-after`` tasks every agent sleeps forever, and a
grandchild sleeps in the driver's process group); ``storm`` (every task sends a prompt longer than
the model's context and retries the 400 forever, printing the error line each time, as the seed's
driver did). The test here only checks that the script itself works against the simulator.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import argparse, json, subprocess, sys, threading, time, urllib.error, urllib.request

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--model", required=True)
p.add_argument("--concurrency", type=int, required=True)
p.add_argument("--tasks", type=int, default=8)
p.add_argument("--turns", type=int, default=3)
p.add_argument("--prompt-words", type=int, default=200)
p.add_argument("--turn-words", type=int, default=50)
p.add_argument("--max-tokens", type=int, default=16)
p.add_argument("--mode", choices=["normal", "hang", "storm"], default="normal")
p.add_argument("--hang-after", type=int, default=1)
args = p.parse_args()

lock = threading.Lock()
next_task = [0]
finished = [0]
hang = threading.Event()


def say(line):
    with lock:
        print(line, flush=True)


def chat(messages, max_tokens):
    body = json.dumps({"model": args.model, "messages": messages, "max_tokens": max_tokens,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(args.url.rstrip("/") + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


def take():
    with lock:
        if next_task[0] >= args.tasks:
            return None
        next_task[0] += 1
        return next_task[0] - 1


def run_task(task):
    words = "lorem " * args.prompt_words
    messages = [{"role": "system", "content": "you are an airline agent"},
                {"role": "user", "content": f"task {task}: " + words}]
    if args.mode == "storm":
        messages[1]["content"] += "word " * 100000
        while True:  # the context-overflow loop: the same 400, retried forever
            try:
                chat(messages, args.max_tokens)
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace").replace("\n", " ")
                say(f"ERROR litellm.BadRequestError: OpenAIException - {detail}")
            time.sleep(0.01)
    for turn in range(args.turns):
        t0 = time.time()
        reply = chat(messages, args.max_tokens)
        messages += [{"role": "assistant", "content": reply},
                     {"role": "user", "content": f"tool result {turn}: " + "ipsum " * args.turn_words}]
        say(f"[PROFILE] task={task} turn={turn} duration={time.time() - t0:.3f}s type=step_complete")
    say(f"FINISHED SIMULATION: task {task} reward=1.0")


def agent():
    while (task := take()) is not None:
        if hang.is_set():
            time.sleep(3600)
        run_task(task)
        with lock:
            finished[0] += 1
            if args.mode == "hang" and finished[0] >= args.hang_after:
                hang.set()


if args.mode == "hang":  # a grandchild in the driver's group, which must go too
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
say(f"starting {args.tasks} tasks with {args.concurrency} agents against {args.url}")
threads = [threading.Thread(target=agent, daemon=True) for _ in range(args.concurrency)]
for t in threads:
    t.start()
for t in threads:
    t.join()
say("all tasks done")
'''


def write_agent(folder: Path) -> Path:
    """Writes the agent script into ``folder`` and returns its path."""
    path = folder / "agent_driver.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.integration
def test_the_agent_script_runs_its_tasks_against_the_simulator(tmp_path):
    import subprocess

    from tests.support.sim_process import SimServer

    sim = SimServer("--time-scale", "0.05")
    try:
        out = subprocess.run([sys.executable, str(write_agent(tmp_path)), "--url", sim.url, "--model", "sim-model",
                              "--concurrency", "2", "--tasks", "3", "--turns", "2"],
                             capture_output=True, text=True, timeout=120)
    finally:
        sim.stop()
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("FINISHED SIMULATION:") == 3
    assert out.stdout.count("type=step_complete") == 6
