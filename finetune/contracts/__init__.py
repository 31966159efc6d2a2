"""What the stages share, each contract in one small module that imports no stage and no torch.

- ``schema``: the strict YAML loader every recipe, pool and evaluation file goes through;
- ``chat``: chat formats, one record each (Jinja template, tokens, call parser, serving parsers);
- ``artifacts``: export formats, file hashing and checking, folders that appear only when complete;
- ``toolcalls``: the tool-call checker (training data, judge pairs, the gateway);
- ``judging``: the judge's prompt and verdict layout (judge training and the gateway);
- ``tokenizer``: loading a tokenizer and fitting it to a chat template and padding.
"""
