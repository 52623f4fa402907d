"""Integrations with other libraries and frameworks, each in its own module and behind its own
optional extra (``pip install "mailsync[microsoft]"``...). Nothing here is imported by
``import mailsync``.
"""
