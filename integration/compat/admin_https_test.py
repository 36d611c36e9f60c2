"""PyPI azure-servicebus 7.15.0's ServiceBusAdministrationClient, unpatched, manages entities
over the emulator's HTTPS (`--tls`). The client always builds `https://{endpoint}` URLs, so
it is given the emulator's connection string as printed and nothing else: no policy, no URL
rewriting. requests trusts the emulator's CA through REQUESTS_CA_BUNDLE, as the banner
says. Run by emulator/tests/https_clients.rs with EMULATOR_CONNECTION_STRING.
"""

import os
import unittest

import certifi
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.servicebus import ServiceBusClient, ServiceBusMessage, TransportType
from azure.servicebus.exceptions import ServiceBusConnectionError
from azure.servicebus.management import ServiceBusAdministrationClient, SqlRuleFilter

CONNECTION_STRING = os.environ["EMULATOR_CONNECTION_STRING"]
AMQP_CONNECTION_STRING = os.environ["EMULATOR_AMQP_CONNECTION_STRING"]
# sb://127.0.0.1:PORT, from the AMQPS connection string's Endpoint.
AMQPS_ENDPOINT = os.environ["EMULATOR_AMQPS_CONNECTION_STRING"].split(";")[0].split("=", 1)[1]


def admin(**kwargs):
    return ServiceBusAdministrationClient.from_connection_string(CONNECTION_STRING, **kwargs)


class AdministrationOverHttps(unittest.TestCase):
    def test_queues(self):
        with admin() as client:
            self.assertTrue(client.get_namespace_properties().name)
            client.create_queue("py-https-queue", max_delivery_count=6)
            queue = client.get_queue("py-https-queue")
            self.assertEqual(queue.max_delivery_count, 6)
            queue.max_delivery_count = 8
            client.update_queue(queue)
            self.assertEqual(client.get_queue("py-https-queue").max_delivery_count, 8)
            self.assertIn("py-https-queue", [q.name for q in client.list_queues()])
            runtime = client.get_queue_runtime_properties("py-https-queue")
            self.assertEqual(runtime.active_message_count, 0)
            client.delete_queue("py-https-queue")
            with self.assertRaises(ResourceNotFoundError):
                client.get_queue("py-https-queue")

    def test_topics_subscriptions_and_rules(self):
        with admin() as client:
            client.create_topic("py-https-topic")
            with self.assertRaises(ResourceExistsError):
                client.create_topic("py-https-topic")
            client.create_subscription("py-https-topic", "blue")
            client.create_rule("py-https-topic", "blue", "only-blue", filter=SqlRuleFilter("color = 'blue'"))
            rules = sorted(r.name for r in client.list_rules("py-https-topic", "blue"))
            self.assertEqual(rules, ["$Default", "only-blue"])
            rule = client.get_rule("py-https-topic", "blue", "only-blue")
            self.assertEqual(rule.filter.sql_expression, "color = 'blue'")
            client.delete_topic("py-https-topic")
            self.assertNotIn("py-https-topic", [t.name for t in client.list_topics()])

    def test_an_entity_made_over_https_carries_messages_over_amqp(self):
        with admin() as client:
            client.create_queue("py-https-then-amqp")
        with ServiceBusClient.from_connection_string(AMQP_CONNECTION_STRING) as amqp:
            with amqp.get_queue_sender("py-https-then-amqp") as sender:
                sender.send_messages(ServiceBusMessage("made over https"))
            with amqp.get_queue_receiver("py-https-then-amqp", max_wait_time=10) as receiver:
                [message] = receiver.receive_messages(max_message_count=1, max_wait_time=10)
                self.assertEqual(str(message), "made over https")
                receiver.complete_message(message)
        with admin() as client:
            self.assertEqual(client.get_queue_runtime_properties("py-https-then-amqp").active_message_count, 0)

    def test_the_amqp_client_over_tls(self):
        # No UseDevelopmentEmulator: the SDK speaks AMQP over TLS, as to Azure. Over TLS it
        # ignores the Endpoint's port (always 5671): custom_endpoint_address is its option
        # for another (with transport_type, which it would otherwise turn to websockets). It reads no variable for its CA (certifi by default):
        # connection_verify is its option.
        with admin() as client:
            client.create_queue("py-over-amqps")
        amqps = ServiceBusClient.from_connection_string(
            os.environ["EMULATOR_AMQPS_CONNECTION_STRING"],
            custom_endpoint_address=AMQPS_ENDPOINT,
            transport_type=TransportType.Amqp,
            connection_verify=os.environ["EMULATOR_CA"],
        )
        with amqps:
            with amqps.get_queue_sender("py-over-amqps") as sender:
                sender.send_messages(ServiceBusMessage("over amqps"))
            with amqps.get_queue_receiver("py-over-amqps", max_wait_time=10) as receiver:
                [message] = receiver.receive_messages(max_message_count=1, max_wait_time=10)
                self.assertEqual(str(message), "over amqps")
                receiver.complete_message(message)

    def test_the_amqp_client_over_tls_refuses_an_untrusted_certificate(self):
        amqps = ServiceBusClient.from_connection_string(
            os.environ["EMULATOR_AMQPS_CONNECTION_STRING"],
            custom_endpoint_address=AMQPS_ENDPOINT,
            transport_type=TransportType.Amqp,
            retry_total=0,
        )
        with amqps:
            with self.assertRaises(ServiceBusConnectionError) as refused:
                with amqps.get_queue_sender("anything") as sender:
                    sender.send_messages(ServiceBusMessage("never"))
            self.assertIn("CERTIFICATE_VERIFY_FAILED", repr(refused.exception) + repr(refused.exception.__cause__))

    def test_without_the_ca_the_certificate_is_refused(self):
        # The public roots only: the emulator's certificate must not verify.
        with admin(connection_verify=certifi.where(), retry_total=0) as client:
            with self.assertRaises(ServiceRequestError) as refused:
                client.get_namespace_properties()
            self.assertIn("CERTIFICATE_VERIFY_FAILED", str(refused.exception))


if __name__ == "__main__":
    unittest.main()
