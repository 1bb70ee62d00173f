"""Background work: the job functions, the queue the API submits to, and the worker that runs them."""
