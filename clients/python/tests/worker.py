"""One add-in process for the cross-process test: a TokenClient over a FileStore
shared with the other processes.  Waits until start_at (epoch seconds), makes one
call, prints {"sub", "session_id", "refreshes", "signed_out", "error"} as JSON.

    python3 worker.py <url> <anon_key> <store_dir> <start_at> [refresh_delay_s]
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from extension_tokens_client import FileStore, TokenClient, UrllibTransport  # noqa: E402
from helpers import Recorder  # noqa: E402

url, anon, directory, start_at = sys.argv[1:5]
delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
rec = Recorder(delay_refresh=delay)
signed_out = []
client = TokenClient(transport=UrllibTransport(url, anon, urlopen=rec), store=FileStore(directory),
                     on_signed_out=lambda e: signed_out.append(e.reason))
time.sleep(max(0.0, float(start_at) - time.time()))
out = {}
try:
    me = client.rpc("whoami")
    out["sub"] = me["sub"]
    out["session_id"] = me["session_id"]
except Exception as e:  # reported to the test
    out["error"] = "%s: %s" % (type(e).__name__, e)
out["refreshes"] = len(rec.refreshes())
out["signed_out"] = signed_out
print(json.dumps(out))
