"""The reconnect policy's pure functions: same numbers and rules as client/backoff.ts."""

import unittest

from agent_websocket.backoff import (
    ReconnectPolicy,
    backoff_delay,
    close_disposition,
    is_duplicate,
    resume_url,
)


class BackoffTest(unittest.TestCase):
    def test_full_jitter_doubles_from_250_ms_and_caps_at_10_s(self):
        policy = ReconnectPolicy()
        ceilings = [backoff_delay(n, policy, lambda: 1.0) for n in range(8)]
        self.assertEqual(ceilings, [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
        self.assertEqual(backoff_delay(0, policy, lambda: 0.5), 0.125)
        self.assertEqual(backoff_delay(3, policy, lambda: 0.0), 0.0)
        self.assertEqual(backoff_delay(10_000, policy, lambda: 1.0), 10.0, "no overflow")

    def test_terminal_close_codes_stop_and_the_rest_reconnect(self):
        for code, error in [
            (4001, "unauthorized"),
            (1008, "policy_violation"),
            (4029, "too_many_connections"),
            (4002, "session_taken_over"),
        ]:
            self.assertEqual(close_disposition(code, ""), (False, error))
        self.assertEqual(close_disposition(1000, "Session timeout"), (False, "session_timeout"))
        for code in (1000, 1001, 1006, 1011, 1012, 1013, 4003):
            self.assertTrue(close_disposition(code, "").reconnect, code)

    def test_duplicates_are_frames_at_or_below_the_last_seq(self):
        self.assertTrue(is_duplicate(7, 7))
        self.assertTrue(is_duplicate(1, 7))
        self.assertFalse(is_duplicate(8, 7))
        self.assertFalse(is_duplicate(0, 7), "seq 0 belongs to the socket")
        self.assertFalse(is_duplicate(None, 7))
        self.assertFalse(is_duplicate(True, 7))

    def test_resume_url_keeps_other_parameters_and_replaces_old_ones(self):
        self.assertEqual(
            resume_url("https://x.supabase.co/functions/v1/agent_websocket?a=1", "abc", 42),
            "wss://x.supabase.co/functions/v1/agent_websocket?a=1&session_id=abc&last_seq=42",
        )
        self.assertEqual(
            resume_url("ws://127.0.0.1:8000/?session_id=old&last_seq=1", "new", 9),
            "ws://127.0.0.1:8000/?session_id=new&last_seq=9",
        )


if __name__ == "__main__":
    unittest.main()
