"""Population training with the JAX engine: chunks of compiled steps, rows and checkpoints between.

``JaxPopulation`` holds ``A`` agents of one architecture (vmapped), runs ``chunk(n)`` = ``n``
A2C iterations of every agent as one compiled call (a ``lax.fori_loop`` whose trip count is an
argument, so every chunk length reuses one program), and turns the recorded episode ends into the
torch engine's rows (``qa2c.train``): ``step, episode, charts/episodic_return,
charts/episodic_length, wall_time, circuit_calls, losses/actor, losses/critic``.

Checkpoints are one ``.npz`` per agent (every array of its carry, plus counters), written
atomically; a run that finds its checkpoint resumes and yields exactly the rows an uninterrupted
run yields after that point. Random streams: agent ``seed`` starts from ``PRNGKey(seed)``; an
agent's run is the same whatever population it is part of.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qa2c._atomic import atomic_write
from qa2c.a2c import A2CConfig, check_int
from qa2c.agents import Agent
from qa2c.jax_engine.a2c import Carry, Layout, layout, make_optimizer, make_population_step
from qa2c.jax_engine.envs import make_env
from qa2c.jax_engine.heads import AgentFns, agent_fns
from qa2c.train import loss_keys

__all__ = ["JaxPopulation", "chunk_cap", "train_population"]

#: iterations per compiled call at most (rows and checkpoints come between calls)
MAX_CHUNK = 10_000
#: bytes of a chunk's record buffer at most (float64 per iteration and agent: done, return and
#: length of every step and environment, two losses): chunks get shorter as agents × n_steps ×
#: n_envs grow (10 agents of a 16 × 16 rollout: 1,089 iterations instead of 10,000, whose buffer
#: took 616 MB); the rows do not depend on the chunk length
RECORD_BYTES = 64 * 2**20
#: the layout of a checkpoint's carry (2: flat parameter vector, counter-based random draws)
CHECKPOINT_FORMAT = 2


class JaxPopulation:
    """``A`` agents of one architecture with their optimisers, environments and keys."""

    def __init__(
        self,
        agents: Sequence[Agent],
        seeds: Sequence[int],
        config: A2CConfig,
        env_id: str = "CartPole-v1",
        max_chunk: int = MAX_CHUNK,
    ) -> None:
        config.validate()
        if not agents or len(agents) != len(seeds):
            raise ValueError(
                f"agents/seeds: need equally many (> 0), got {len(agents)}, {len(seeds)}"
            )
        ref = agents[0]
        for ag in agents[1:]:
            if (ag.name, ag.options, ag.dtype) != (ref.name, ref.options, ref.dtype):
                raise ValueError(
                    f"agents: a population needs one architecture, got {ref.describe()} "
                    f"and {ag.describe()}"
                )
        if max_chunk < 1:
            raise ValueError(f"max_chunk: expected >= 1, got {max_chunk}")
        self.config, self.env_id, self.seeds = config, env_id, list(seeds)
        self.agents = list(agents)
        self.n_agents, self.n_envs = len(agents), config.n_envs
        self.max_chunk = max_chunk
        env, env_params = make_env(env_id)
        fns = [agent_fns(a) for a in agents]
        self.fns = fns[0]
        self.layout: Layout = layout(self.fns)
        n_obs = env.observation_space(env_params).shape[0]
        if n_obs != ref.n_obs or env.num_actions != ref.n_actions:
            raise ValueError(
                f"env_id: {env_id!r} has {n_obs} observations and {env.num_actions} actions, "
                f"the agent expects {ref.n_obs} and {ref.n_actions}"
            )
        key = (
            ref.name,
            json.dumps(ref.options, sort_keys=True),
            str(ref.dtype),
            json.dumps(asdict(config), sort_keys=True),
            env_id,
            self.n_agents,
            max_chunk,
        )
        if key not in _PROGRAMS:  # one compile per architecture, algorithm and population size
            _PROGRAMS[key] = _programs(
                self.fns, self.layout, config, env, env_params, self.n_agents, max_chunk
            )
        init, self._chunk = _PROGRAMS[key]
        params = jnp.asarray(np.stack([layout(f).init for f in fns]))
        self.carry: Carry = init(params, jnp.asarray(self.seeds))
        self.vec_steps = 0  # lockstep environment steps per environment
        self.episodes = np.zeros(self.n_agents, dtype=np.int64)
        self.loss_sum = np.zeros((self.n_agents, 2))
        self.loss_count = np.zeros(self.n_agents, dtype=np.int64)
        cpi_a, cpi_c = self.fns.circuits_per_input
        self._calls_per_iter = (cpi_a + 2 * cpi_c) * config.n_envs * config.n_steps

    @property
    def steps(self) -> int:
        """Environment steps taken by each agent."""
        return self.vec_steps * self.n_envs

    @property
    def circuit_calls(self) -> int:
        """Circuit executions per agent, counted as the torch engine counts them."""
        return self._calls_per_iter * (self.vec_steps // self.config.n_steps)

    def run_chunk(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        """``n`` iterations (``1 <= n <= max_chunk``); rows of the episodes that ended."""
        if not 1 <= n <= self.max_chunk:
            raise ValueError(f"n: expected 1..{self.max_chunk}, got {n}")
        self.carry, buf = self._chunk(self.carry, jnp.asarray(n))
        rec = np.asarray(buf[:n])  # (n, A, 3·T·E + 2): done, ret, length, losses
        shape = (n, self.n_agents, self.config.n_steps, self.n_envs)
        done, ret, length = (x.reshape(shape) for x in np.split(rec[..., :-2], 3, axis=-1))
        out = {"done": done > 0, "ret": ret, "length": length, "losses": rec[..., -2:]}
        return self._rows(out, n)

    def _rows(self, out: dict[str, np.ndarray], n: int) -> list[tuple[int, dict[str, Any]]]:
        t, e_n = self.config.n_steps, self.n_envs
        base = self.vec_steps
        calls0 = self.circuit_calls
        self.vec_steps += n * t
        rows: list[tuple[int, dict[str, Any]]] = []
        losses = out["losses"].astype(np.float64)  # (n, A, 2)
        for i in range(self.n_agents):
            ends = np.argwhere(out["done"][:, i])  # (m, 3): iteration, k, env (row-major)
            csum = np.cumsum(losses[:, i], 0)  # (n, 2)
            last = -1  # iteration of the previous pop inside this chunk
            for it, k, env in ends:
                count = self.loss_count[i] + (it - last)
                total = self.loss_sum[i] + csum[it] - (csum[last] if last >= 0 else 0.0)
                # no update since the previous row: no loss keys (NaN is a diverged loss)
                means = (total / count).tolist() if count else None
                self.loss_sum[i], self.loss_count[i], last = 0.0, 0, it
                self.episodes[i] += 1
                rows.append(
                    (
                        i,
                        {
                            "step": int((base + it * t + k) * e_n + env + 1),
                            "episode": int(self.episodes[i]),
                            "charts/episodic_return": float(out["ret"][it, i, k, env]),
                            "charts/episodic_length": int(out["length"][it, i, k, env]),
                            "wall_time": 0.0,
                            "circuit_calls": calls0 + (int(it) + 1) * self._calls_per_iter,
                            **loss_keys(means),
                        },
                    )
                )
            self.loss_sum[i] += csum[-1] - (csum[last] if last >= 0 else 0.0)
            self.loss_count[i] += n - 1 - last
        return rows

    # -- checkpoints -----------------------------------------------------------------------------
    def _meta(self, i: int) -> dict[str, Any]:
        ag = self.agents[i]
        return {
            "agent": {"name": ag.name, "options": ag.options, "dtype": str(ag.dtype)},
            "seed": self.seeds[i],
            "config": asdict(self.config),
            "env_id": self.env_id,
            "format": CHECKPOINT_FORMAT,
        }

    def member_state(self, i: int) -> dict[str, np.ndarray]:
        """Agent ``i``'s whole state as named numpy arrays (carry leaves and counters)."""
        leaves = jax.tree.leaves(self.carry)
        state = {f"leaf{j}": np.asarray(x[i]) for j, x in enumerate(leaves)}
        state.update(
            meta=np.array(json.dumps(self._meta(i))),
            vec_steps=np.array(self.vec_steps),
            episodes=np.array(self.episodes[i]),
            loss_sum=self.loss_sum[i].copy(),
            loss_count=np.array(self.loss_count[i]),
        )
        return state

    def load_member_states(self, states: Sequence[dict[str, np.ndarray]]) -> None:
        """Restore every agent from ``member_state`` dicts (one per agent, same step)."""
        if len(states) != self.n_agents:
            raise ValueError(f"states: expected {self.n_agents}, got {len(states)}")
        steps = {int(s["vec_steps"]) for s in states}
        if len(steps) != 1:
            raise ValueError(f"states: members are at different steps {sorted(steps)}")
        leaves, treedef = jax.tree.flatten(self.carry)
        for i, s in enumerate(states):
            meta = json.loads(str(s["meta"]))
            if meta != json.loads(json.dumps(self._meta(i))):
                raise ValueError(f"states[{i}]: checkpoint {meta} does not match {self._meta(i)}")
            for j, x in enumerate(leaves):
                if s[f"leaf{j}"].shape != x.shape[1:]:
                    raise ValueError(f"states[{i}]: leaf {j} has shape {s[f'leaf{j}'].shape}")
        new = [
            jnp.asarray(np.stack([s[f"leaf{j}"] for s in states]), dtype=x.dtype)
            for j, x in enumerate(leaves)
        ]
        self.carry = jax.tree.unflatten(treedef, new)
        self.vec_steps = steps.pop()
        for i, s in enumerate(states):
            self.episodes[i] = int(s["episodes"])
            self.loss_sum[i] = s["loss_sum"]
            self.loss_count[i] = int(s["loss_count"])

    def trained_params(self, i: int) -> dict[str, dict[str, np.ndarray]]:
        """Agent ``i``'s current parameters (role -> torch name -> array)."""
        params = self.layout.unravel(self.carry.params[i])
        return jax.tree.map(np.asarray, params)


Array = jax.Array
Program = Any
#: compiled (init, chunk) programs by (agent, options, dtype, algorithm, env, agents, max_chunk)
_PROGRAMS: dict[tuple[Any, ...], tuple[Program, Program]] = {}


def _programs(
    fns: AgentFns,
    lay: Layout,
    config: A2CConfig,
    env: Any,
    env_params: Any,
    n_agents: int,
    max_chunk: int,
) -> tuple[Program, Program]:
    """The jitted population ``init(params, seeds)`` and ``chunk(carry, n) -> (carry, out)``."""
    tx = make_optimizer(config, lay.actor)
    e_n = config.n_envs

    def init(params: Any, seed: Array) -> Carry:
        key, k_env = jax.random.split(jax.random.PRNGKey(seed))
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_env, e_n), env_params
        )
        opt = tx.init(params)
        zeros = jnp.zeros(e_n, dtype=jnp.int64)
        return Carry(params, opt, state, obs.astype(jnp.float32), key, zeros, zeros * 0.0)

    step = make_population_step(fns, config, lay, env, env_params)

    def chunk(carry: Carry, n: Array) -> tuple[Carry, Array]:
        # one float64 record per iteration and agent (one write per step, not four):
        # done, ret, length (T·E each; exact in float64) and the two losses
        buf = jnp.zeros((max_chunk, n_agents, record_width(config)), jnp.float64)

        def body(i: Array, state: tuple[Carry, Array]) -> tuple[Carry, Array]:
            c, b = state
            c, out = step(c)
            parts = [out[k].reshape(n_agents, -1) for k in ("done", "ret", "length", "losses")]
            rec = jnp.concatenate([x.astype(jnp.float64) for x in parts], -1)
            return c, b.at[i].set(rec)

        return jax.lax.fori_loop(0, n, body, (carry, buf))

    return jax.jit(jax.vmap(init)), jax.jit(chunk, donate_argnums=0)


def save_state(state: dict[str, np.ndarray], path: Path) -> None:
    """Write a member state to ``path`` (.npz) atomically."""
    atomic_write(Path(path), lambda tmp: np.savez(tmp, **state), suffix=".tmp.npz")  # type: ignore[arg-type]


def load_state(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def record_width(config: A2CConfig) -> int:
    """float64 entries an agent records per iteration: done, return and length of every step and
    environment, then the two losses (the layout ``run_chunk`` reads back)."""
    return 3 * config.n_steps * config.n_envs + 2


def chunk_cap(config: A2CConfig, n_agents: int) -> int:
    """The most iterations per chunk whose record buffer fits in :data:`RECORD_BYTES` (>= 1)."""
    return max(1, RECORD_BYTES // (n_agents * record_width(config) * 8))


def train_population(
    agents: Sequence[Agent],
    seeds: Sequence[int],
    total_steps: int,
    config: A2CConfig | None = None,
    env_id: str = "CartPole-v1",
    checkpoint_paths: Sequence[Path] | None = None,
    checkpoint_every: int = 0,
    max_chunk: int = MAX_CHUNK,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train agents of one architecture in lockstep; yields ``(agent index, row)``.

    The JAX counterpart of ``qa2c.train.train_population`` (same arguments, rows, checkpoint
    cadence and resume; checkpoints are ``.npz`` files). Agents whose checkpoints are at different
    steps (or missing) run as separate lockstep groups, one after another.
    """
    config = A2CConfig() if config is None else config
    config.validate()
    total_steps = check_int("total_steps", total_steps, 1)  # as the torch engine
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 0)
    max_chunk = check_int("max_chunk", max_chunk, 1)
    seeds = [check_int(f"seeds[{i}]", s, 0) for i, s in enumerate(seeds)]
    if len(agents) != len(seeds) or not agents:
        raise ValueError(f"agents/seeds: need equally many (> 0), got {len(agents)}, {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: must be distinct within a population, got {list(seeds)}")
    paths = (
        [None] * len(agents) if checkpoint_paths is None else [Path(p) for p in checkpoint_paths]
    )
    if len(paths) != len(agents):
        raise ValueError(f"checkpoint_paths: expected {len(agents)}, got {len(paths)}")
    states = [None if p is None or not p.exists() else load_state(p) for p in paths]
    groups: dict[int, list[int]] = {}
    for i, st in enumerate(states):
        groups.setdefault(-1 if st is None else int(st["vec_steps"]), []).append(i)
    per_iter = config.n_envs * config.n_steps
    for key in sorted(groups, reverse=True):
        idx = groups[key]
        chunk = min(max_chunk, chunk_cap(config, len(idx)))
        pop = JaxPopulation(
            [agents[i] for i in idx], [seeds[i] for i in idx], config, env_id, chunk
        )
        if key >= 0:
            pop.load_member_states([st for i in idx if (st := states[i]) is not None])
        offsets = [0.0 if (st := states[i]) is None else float(st["wall_time"]) for i in idx]
        start = time.perf_counter()
        last_ckpt = pop.steps
        while pop.steps < total_steps:
            left = -(-(total_steps - pop.steps) // per_iter)
            n = min(chunk, left)
            if checkpoint_every:
                n = min(n, -(-(last_ckpt + checkpoint_every - pop.steps) // per_iter))
            rows = pop.run_chunk(n)
            now = time.perf_counter() - start
            for j, row in rows:
                row["wall_time"] = offsets[j] + now
                yield idx[j], row
            finished = pop.steps >= total_steps
            if (checkpoint_every and pop.steps - last_ckpt >= checkpoint_every) or finished:
                last_ckpt = pop.steps
                for j, p in enumerate(paths[i] for i in idx):
                    if p is not None:
                        st = pop.member_state(j)
                        st["wall_time"] = np.array(offsets[j] + time.perf_counter() - start)
                        save_state(st, p)
