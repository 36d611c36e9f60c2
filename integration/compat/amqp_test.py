"""The PyPI Service Bus SDK, azure-servicebus 7.15.0 (its own pure-Python AMQP stack), drives
the emulator's AMQP listener unchanged: a connection string with UseDevelopmentEmulator=true
is all it is given. Entities come from the emulator's --config file (amqp-entities.json);
REST is used only to show both surfaces share one broker, and to move the manual clock.
Run by emulator/tests/amqp_sdks.rs.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import time
import unittest
import urllib.parse
import urllib.request
import uuid

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
)

AMQP = os.environ["EMULATOR_AMQP"]
REST = os.environ["EMULATOR_URL"]
WAIT = 3
TYPED_UUID = uuid.UUID("12345678-1234-5678-9abc-def012345678")


def connection_string(key="SAS_KEY_VALUE"):
    return (
        f"Endpoint=sb://{AMQP};SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key};UseDevelopmentEmulator=true;"
    )


def sas(uri):
    """A SAS token for the REST surface, signed as every Service Bus client signs it."""
    expiry = int(time.time()) + 3600
    resource = urllib.parse.quote(uri, safe="")
    digest = hmac.new(b"SAS_KEY_VALUE", f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    signature = urllib.parse.quote(base64.b64encode(digest), safe="")
    return (
        f"SharedAccessSignature sr={resource}&sig={signature}&se={expiry}"
        "&skn=RootManageSharedAccessKey"
    )


def rest(method, path, body=None, headers=None):
    request = urllib.request.Request(f"{REST}{path}", data=body, method=method)
    request.add_header("Authorization", sas(f"{REST}/"))
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, response.read()


def receive(receiver, count):
    got = []
    while len(got) < count:
        more = receiver.receive_messages(max_message_count=count - len(got), max_wait_time=WAIT)
        if not more:
            break
        got.extend(more)
    return got


class Amqp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = ServiceBusClient.from_connection_string(connection_string())

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_send_single_list_batch_then_peek_lock_and_complete(self):
        when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        with self.client.get_queue_sender("py-queue") as sender:
            sender.send_messages(ServiceBusMessage(
                "hello", message_id="m-1", correlation_id="c-1", subject="greeting",
                content_type="text/plain", reply_to="back", to="someone",
                time_to_live=datetime.timedelta(hours=1),
                application_properties={
                    "color": "red", "n": 42, "ratio": 2.5, "flag": True, "when": when,
                    "id": TYPED_UUID,
                },
            ))
            sender.send_messages([ServiceBusMessage("a1"), ServiceBusMessage("a2")])
            batch = sender.create_message_batch()
            batch.add_message(ServiceBusMessage("a3"))
            sender.send_messages(batch)
        with self.client.get_queue_receiver("py-queue") as receiver:
            got = receive(receiver, 4)
            self.assertEqual([str(m) for m in got], ["hello", "a1", "a2", "a3"])
            first = got[0]
            self.assertEqual(first.message_id, "m-1")
            self.assertEqual(first.correlation_id, "c-1")
            self.assertEqual(first.subject, "greeting")
            self.assertEqual(first.content_type, "text/plain")
            self.assertEqual(first.reply_to, "back")
            self.assertEqual(first.to, "someone")
            self.assertEqual(first.time_to_live, datetime.timedelta(hours=1))
            self.assertEqual(first.delivery_count, 0)
            self.assertEqual(first.sequence_number, 1)
            self.assertIsNotNone(first.lock_token)
            props = {k.decode(): v for k, v in first.application_properties.items()}
            self.assertEqual(props["color"], b"red" if isinstance(props["color"], bytes) else "red")
            self.assertEqual((props["n"], props["ratio"], props["flag"]), (42, 2.5, True))
            # An AMQP type the REST text cannot carry comes back as sent (the SDK itself
            # sends bytes values as strings, so a uuid is what Python can show).
            self.assertEqual(props["id"], TYPED_UUID)
            for m in got:
                receiver.complete_message(m)
            self.assertEqual(receiver.receive_messages(max_message_count=1, max_wait_time=1), [])

    def test_abandon_then_max_delivery_count_dead_letters(self):
        with self.client.get_queue_sender("py-retry") as sender:
            sender.send_messages(ServiceBusMessage("retry me"))
        with self.client.get_queue_receiver("py-retry") as receiver:
            (one,) = receive(receiver, 1)
            self.assertEqual(one.delivery_count, 0)
            receiver.abandon_message(one)
            (two,) = receive(receiver, 1)
            self.assertEqual(two.delivery_count, 1)
            receiver.abandon_message(two)  # py-retry has MaxDeliveryCount 2
        with self.client.get_queue_receiver("py-retry", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            (dead,) = receive(dlq, 1)
            self.assertEqual(str(dead), "retry me")
            self.assertEqual(dead.dead_letter_reason, "MaxDeliveryCountExceeded")
            dlq.complete_message(dead)

    def test_dead_letter_with_reason_and_description(self):
        with self.client.get_queue_sender("py-dead") as sender:
            sender.send_messages(ServiceBusMessage("poison"))
        with self.client.get_queue_receiver("py-dead") as receiver:
            (m,) = receive(receiver, 1)
            receiver.dead_letter_message(m, reason="Bad", error_description="really bad")
        with self.client.get_queue_receiver(
            "py-dead", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
        ) as dlq:
            (dead,) = receive(dlq, 1)
            self.assertEqual((str(dead), dead.dead_letter_reason, dead.dead_letter_error_description),
                             ("poison", "Bad", "really bad"))
            self.assertEqual(dlq.receive_messages(max_message_count=1, max_wait_time=1), [])

    def test_receive_and_delete(self):
        with self.client.get_queue_sender("py-rad") as sender:
            sender.send_messages([ServiceBusMessage("1"), ServiceBusMessage("2")])
        with self.client.get_queue_receiver(
            "py-rad", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            self.assertEqual([str(m) for m in receive(receiver, 2)], ["1", "2"])
            self.assertEqual(receiver.receive_messages(max_message_count=1, max_wait_time=1), [])

    def test_topics_route_through_sql_and_correlation_rules(self):
        with self.client.get_topic_sender("py-topic") as sender:
            sender.send_messages([
                ServiceBusMessage("red one", application_properties={"color": "red"}),
                ServiceBusMessage("blue one", application_properties={"color": "blue"}),
                ServiceBusMessage("labelled", subject="special"),
            ])

        def bodies(subscription, n):
            with self.client.get_subscription_receiver(
                "py-topic", subscription, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
            ) as r:
                got = [str(m) for m in receive(r, n)]
                self.assertEqual(r.receive_messages(max_message_count=1, max_wait_time=1), [])
                return got

        self.assertEqual(bodies("all", 3), ["red one", "blue one", "labelled"])
        self.assertEqual(bodies("red", 1), ["red one"])
        self.assertEqual(bodies("special", 1), ["labelled"])

    def test_expired_lock_redelivers_and_its_settlement_fails(self):
        with self.client.get_queue_sender("py-lock") as sender:
            sender.send_messages(ServiceBusMessage("slow"))
        with self.client.get_queue_receiver("py-lock") as receiver:
            (m,) = receive(receiver, 1)
            status, _, _ = rest("POST", "/$emulator/clock/advance?seconds=61")
            self.assertEqual(status, 200)
            (again,) = receive(receiver, 1)
            self.assertEqual((str(again), again.delivery_count), ("slow", 1))
            with self.assertRaises(MessageLockLostError):
                receiver.complete_message(m)
            receiver.complete_message(again)

    def test_peek_shows_messages_without_locking_them(self):
        with self.client.get_queue_receiver("py-peek") as receiver:
            self.assertEqual(receiver.peek_messages(max_message_count=5), [])
            with self.client.get_queue_sender("py-peek") as sender:
                sender.send_messages([ServiceBusMessage("p1"), ServiceBusMessage("p2")])
            (locked,) = receive(receiver, 1)
            # The SDK peeks on from the last sequence number it saw unless told where.
            peeked = receiver.peek_messages(max_message_count=10, sequence_number=1)
            self.assertEqual([str(m) for m in peeked], ["p1", "p2"])
            self.assertEqual([m.sequence_number for m in peeked], [1, 2])
            (second,) = receive(receiver, 1)
            self.assertEqual((str(second), second.delivery_count), ("p2", 0))
            receiver.complete_message(locked)
            receiver.complete_message(second)

    def test_defer_then_receive_deferred(self):
        with self.client.get_queue_sender("py-defer") as sender:
            sender.send_messages([ServiceBusMessage("later"), ServiceBusMessage("now")])
        with self.client.get_queue_receiver("py-defer") as receiver:
            (first,) = receive(receiver, 1)
            receiver.defer_message(first)
            (nxt,) = receive(receiver, 1)
            self.assertEqual(str(nxt), "now")
            receiver.complete_message(nxt)
            (deferred,) = receiver.receive_deferred_messages([first.sequence_number])
            self.assertEqual(str(deferred), "later")
            receiver.complete_message(deferred)
            self.assertEqual(receiver.receive_messages(max_message_count=1, max_wait_time=1), [])

    def test_schedule_and_cancel(self):
        tomorrow = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        with self.client.get_queue_sender("py-sched") as sender:
            a, b = sender.schedule_messages(
                [ServiceBusMessage("A"), ServiceBusMessage("B")], tomorrow
            )
            self.assertLess(a, b)
            sender.cancel_scheduled_messages(b)
        with self.client.get_queue_receiver(
            "py-sched", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            self.assertEqual(receiver.receive_messages(max_message_count=1, max_wait_time=1), [])
            self.assertEqual(rest("POST", f"/$emulator/clock/advance?seconds={2 * 86400}")[0], 200)
            self.assertEqual([str(m) for m in receive(receiver, 2)], ["A"])

    def test_renewing_a_lock_keeps_the_message(self):
        with self.client.get_queue_sender("py-lock") as sender:
            sender.send_messages(ServiceBusMessage("renew me"))
        with self.client.get_queue_receiver("py-lock") as receiver:
            (m,) = receive(receiver, 1)
            first = m.locked_until_utc
            self.assertEqual(rest("POST", "/$emulator/clock/advance?seconds=40")[0], 200)
            renewed = receiver.renew_message_lock(m)
            self.assertGreaterEqual(renewed, first + datetime.timedelta(seconds=40))
            self.assertEqual(rest("POST", "/$emulator/clock/advance?seconds=40")[0], 200)
            self.assertEqual(receiver.receive_messages(max_message_count=1, max_wait_time=1), [])
            receiver.complete_message(m)

    def test_one_broker_rest_and_amqp(self):
        status, _, _ = rest("POST", "/py-interop/messages", b"from rest", {
            "Content-Type": "text/plain",
            "BrokerProperties": json.dumps({"MessageId": "r-1", "Label": "rest"}),
            "color": '"green"', "n": "7",
        })
        self.assertEqual(status, 201)
        with self.client.get_queue_receiver(
            "py-interop", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            (m,) = receive(receiver, 1)
            self.assertEqual((str(m), m.message_id, m.subject, m.content_type),
                             ("from rest", "r-1", "rest", "text/plain"))
            props = {k.decode(): v for k, v in m.application_properties.items()}
            self.assertEqual(props["n"], 7)
        with self.client.get_queue_sender("py-interop") as sender:
            sender.send_messages(ServiceBusMessage(
                b"from amqp", message_id="a-1", subject="amqp", application_properties={"n": 8},
            ))
        status, headers, body = rest("DELETE", "/py-interop/messages/head?timeout=5")
        self.assertEqual((status, body), (200, b"from amqp"))
        broker = json.loads(headers["brokerproperties"])
        self.assertEqual((broker["MessageId"], broker["Label"], broker["DeliveryCount"]), ("a-1", "amqp", 1))
        self.assertEqual(headers["n"], "8")

    def test_errors_an_application_checks(self):
        with ServiceBusClient.from_connection_string(
            connection_string("not-the-key"), retry_total=0
        ) as wrong:
            with self.assertRaises((ServiceBusAuthenticationError, ServiceBusAuthorizationError)):
                with wrong.get_queue_sender("py-queue") as sender:
                    sender.send_messages(ServiceBusMessage("x"))
        with self.assertRaises(MessagingEntityNotFoundError):
            with self.client.get_queue_sender("no-such-queue") as sender:
                sender.send_messages(ServiceBusMessage("x"))


if __name__ == "__main__":
    unittest.main()
