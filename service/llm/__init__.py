"""Everything that talks to a model: the port the pipeline sees (``port``); the openai client
(``client``) with its one retry policy (``retry``), the SDK's errors mapped at one boundary
(``openai_errors``), the request it sends (``request``, strict schemas by ``schema``), the answer it
reads (``answer``) and what a call took (``usage``, priced by ``costs``); the rate window
(``ratelimit``), the embedded model (``local``) and the one factory that builds a client from the
settings (``factory``).

Nothing is imported here, so that ``service.llm.port`` can be read without loading openai.
"""
