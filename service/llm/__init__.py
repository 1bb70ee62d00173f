"""Everything that talks to a model: the port the pipeline sees (``port``), the openai client with
its one retry policy (``client``), the rate window (``ratelimit``), the embedded model (``local``)
and the one factory that builds a client from the settings (``factory``).

Nothing is imported here, so that ``service.llm.port`` can be read without loading openai.
"""
