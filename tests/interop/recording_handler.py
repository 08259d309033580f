"""An aiosmtpd handler that records what an MX host received, for the
interop tests to assert on. Loaded by aiosmtpd itself:

  PYTHONPATH=tests/interop python3 -m aiosmtpd -n -c recording_handler.Recorder \\
      -l HOST:PORT [--tlscert C --tlskey K] -- DIRECTORY [--name NAME] \\
      [--delay-before S] [--delay-after S] [--delay-quit S] \\
      [--reply LOCALPART=REPLY ...] [--reply-once LOCALPART=REPLY ...]

("--" keeps aiosmtpd from reading the handler's options as its own.)

Each accepted message becomes one JSON file in DIRECTORY (written under a
temporary name and renamed, so a reader never sees half a file) holding the
envelope, whether the session was TLS and its version and cipher, the
client's address and port (one per SMTP session) and the data. Every MAIL
command is also appended to DIRECTORY/mail.jsonl with the session's TLS
state, so a test can tell that a sender was never even offered to a host.

Scripting: --reply LOCALPART=REPLY answers RCPT for that local part with
REPLY (e.g. "550 5.1.1 no such user"), --reply-once only the first time.
--delay-before/--delay-after hold each DATA for that many seconds before and
after the message is recorded, --delay-quit the reply to QUIT. A delay after
recording is the window of RFC 1047: the MX has the message, the client has
not yet seen the 250.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import time


class Recorder:
    def __init__(self, directory, name="", delay_before=0.0, delay_after=0.0, replies=None):
        self.directory = directory
        self.name = name
        self.delay_before = delay_before
        self.delay_after = delay_after
        self.replies = replies or {}
        self.delay_quit = 0.0
        self.replies_once = {}  # answered the first time only, then accepted
        self.counter = itertools.count(1)
        os.makedirs(directory, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        own = argparse.ArgumentParser(prog="recording_handler.Recorder")
        own.add_argument("directory")
        own.add_argument("--name", default="")
        own.add_argument("--delay-before", type=float, default=0.0)
        own.add_argument("--delay-after", type=float, default=0.0)
        own.add_argument("--delay-quit", type=float, default=0.0)
        own.add_argument("--reply", action="append", default=[], metavar="LOCALPART=REPLY")
        own.add_argument("--reply-once", action="append", default=[], metavar="LOCALPART=REPLY")
        options = own.parse_args(args)
        def parse(items):
            replies = {}
            for item in items:
                local, _, reply = item.partition("=")
                if not reply[:3].isdigit():
                    parser.error("%r: REPLY must start with a code" % item)
                replies[local.lower()] = reply
            return replies

        recorder = cls(options.directory, options.name, options.delay_before, options.delay_after,
                       parse(options.reply))
        recorder.delay_quit = options.delay_quit
        recorder.replies_once = parse(options.reply_once)
        return recorder

    @staticmethod
    def tls_of(session):
        """(used, version, cipher) of the session; session.ssl is the TLS
        transport's extra info once STARTTLS has completed."""
        extra = session.ssl
        if not extra:
            return False, None, None
        ssl_object = extra.get("ssl_object")
        version = ssl_object.version() if ssl_object is not None else None
        cipher = extra.get("cipher")
        return True, version, cipher[0] if cipher else None

    def append_mail(self, entry):
        with open(os.path.join(self.directory, "mail.jsonl"), "a") as out:
            out.write(json.dumps(entry) + "\n")

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        used, version, _ = self.tls_of(session)
        self.append_mail({"mx": self.name, "mail_from": address, "tls": used, "tls_version": version})
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rpartition("@")[0].lower()
        reply = self.replies.get(local) or self.replies_once.pop(local, None)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        if self.delay_quit:
            await asyncio.sleep(self.delay_quit)
        return "221 Bye"

    async def handle_DATA(self, server, session, envelope):
        if self.delay_before:
            await asyncio.sleep(self.delay_before)
        used, version, cipher = self.tls_of(session)
        data = envelope.original_content or envelope.content or b""
        record = {
            "mx": self.name,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "tls": used,
            "tls_version": version,
            "tls_cipher": cipher,
            "helo": session.host_name,
            "peer": list(session.peer) if session.peer else None,  # one per SMTP session
            "received_at": time.time(),
            "data": base64.b64encode(data).decode("ascii"),
        }
        stem = "%d-%d-%d" % (os.getpid(), time.monotonic_ns(), next(self.counter))
        temporary = os.path.join(self.directory, "." + stem + ".tmp")
        with open(temporary, "w") as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, os.path.join(self.directory, stem + ".json"))
        if self.delay_after:
            await asyncio.sleep(self.delay_after)
        return "250 2.0.0 OK recorded " + stem
