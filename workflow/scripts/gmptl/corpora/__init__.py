"""One reader per corpus format; `gmptl.corpus` dispatches on `corpus.format`."""
