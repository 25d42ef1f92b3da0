"""What runs beside the pipeline: the Prefect server, work pool and worker
(``prefect_services``) and the embedded local model server (``local_model``). Built on the
domain library ``optfolio``; never imported by it."""
