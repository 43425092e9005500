"""One exception type for every input problem the user can fix.

The CLI turns it into ``error: <message>`` with exit status 2, the ComfyUI nodes
let it surface as a node error. Messages name the input and say what would fix it.
"""


class TCIGInputError(ValueError):
    """A user-supplied input (file, number, prompt, layout) cannot be used as given."""
