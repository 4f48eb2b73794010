"""Running one cell and a sweep of them: the cell spec, measurement, process isolation,
executors, the results store and what a row holds; a cell sharded over ranks (sharding,
sharded_*, shard_launch)."""
