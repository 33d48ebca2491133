"""Exit 0 at once on SIGTERM or SIGINT, with no moment unguarded.

A Python signal handler runs only between bytecodes. A signal that lands
after the interpreter's last look and before a blocking accept() or recv()
enters the kernel is acted on only when that call returns: for an idle
client, never. Here both signals are blocked in every thread, and one thread
takes them with sigwait(), which cannot miss a signal that is pending.
"""
import os
import signal
import sys
import threading

SIGNALS = {signal.SIGTERM, signal.SIGINT}


def exit_on_signal():
    """Call before any other thread starts: threads inherit the blocked mask."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

    def wait():
        signal.sigwait(SIGNALS)
        sys.stdout.flush()
        os._exit(0)  # the kernel closes the sockets; nothing else is held

    threading.Thread(target=wait, name='exit-on-signal', daemon=True).start()
