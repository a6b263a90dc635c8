"""The research hub: untrusted volunteers contribute experiments, accepted only after re-execution.

`server.py` holds one task and its shared chain of accepted commits; `worker.py` runs the normal
research loop on a volunteer's machine and submits each local keep as a claim; `verifier.py` runs a
trusted machine's paired re-executions; `verify.py` judges them. See docs/hub.md.
"""
