"""The model card. Owns: nothing itself (``build``, ``body``, ``scores`` do); it never imports them."""
