"""A stand-in for a terminal (``isatty`` True) that keeps what is written to it."""


class Terminal:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True
