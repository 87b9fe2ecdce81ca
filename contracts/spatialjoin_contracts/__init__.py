"""Every contract that crosses a process boundary, shared by the operator and the workers.

- ``api``, ``models``: the SpatialJoinJob and WorkerPool CRDs (pydantic), the source
  of ``crds/*.yaml`` (``crd_schema``, ``crd_generate``); ``validation`` checks the
  rules the schema cannot express on Kubernetes 1.20.
- ``result_schema``, ``contract_validator``: Parquet result contracts v2.1 / v2.0.
- ``task_message``: the Kafka task message and its strict decoding.
- ``ddl``: spatial_async_jobs and spatial_join_results, with an idempotent migration.
- ``partition_map``, ``dataset``, ``dataset_load``: spatial partitions and sample data.
"""
