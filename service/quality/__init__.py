"""Quality measured against gold annotations: ``gold`` reads them, ``score`` compares a digest with
them (pure), ``run`` analyses a gold story with a model and scores it (``newsdigest eval``)."""
