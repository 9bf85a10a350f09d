"""The Prefect tasks: thin wrappers that call `alertdist.jobs` and turn results into artifacts, with the retry
policy in their decorators (`policy`). Flows (`alertdist.flows`) only order these tasks.

- `policy`: the one retry condition (transient trouble only) and the task policies built on it.
- `progress`: `ArtifactProgress`, the Prefect implementation of `alertdist.jobs.progress.Progress`.
- `nights`, `publish`, `filters`, `archive`, `replay`: one module per operation.
"""
