"""The code pipeline of `data prepare`: a repository is walked with its filters (``walk``),
secrets redacted (``secrets``), duplicates and evaluation leaks dropped (``dedup``), and files
turned into samples, fill-in-the-middle included (``samples``, ``fim``)."""
