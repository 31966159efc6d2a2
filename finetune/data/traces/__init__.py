"""The trace pipeline of `data prepare`: a record in any layout (``formats``) becomes a canonical
trace, is validated and normalised (``validate``) and rendered with loss masks (``render``);
``read`` is that pipeline as the other stages read traces (judge data, eval)."""
