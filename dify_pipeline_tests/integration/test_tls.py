"""TLS verification is on by default for Dify and the search cluster; a private CA is trusted through a CA file."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dify_pipeline.resources.dify import DifyFatalError, DifyResource
from dify_pipeline.resources.search import SearchCluster, SearchClusterError
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulator, DifyEmulatorConfig
from dify_pipeline_dev.emulators.elasticsearch import FLAVOURS, ElasticsearchEmulator, ElasticsearchEmulatorConfig
from dify_pipeline_dev.emulators.server import serve_in_thread


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    """A private certificate authority and a server certificate it signed for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dify_pipeline test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {name: str(path) for name, path in paths.items()}


def test_dify_over_tls_refuses_an_unknown_authority_and_trusts_a_given_ca_file(private_ca):
    emulator = DifyEmulator(DifyEmulatorConfig(apps=[DifyApp(api_key="app-tls")], latency_ms=1))
    with serve_in_thread(emulator.app, certfile=private_ca["cert"], keyfile=private_ca["key"]) as server:
        with pytest.raises(DifyFatalError, match="DIFY_CA_FILE"):
            DifyResource(base_url=f"{server.url}/v1", api_key="app-tls").fetch_parameters()
        trusted = DifyResource(base_url=f"{server.url}/v1", api_key="app-tls", ca_file=private_ca["ca"])
        assert trusted.fetch_parameters()["user_input_form"]
    assert server.url.startswith("https://")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_the_search_cluster_over_tls_refuses_an_unknown_authority_and_trusts_a_given_ca_file(private_ca, flavour):
    emulator = ElasticsearchEmulator(ElasticsearchEmulatorConfig(**FLAVOURS[flavour]))
    engine = FLAVOURS[flavour]["product"]
    with serve_in_thread(emulator.app, certfile=private_ca["cert"], keyfile=private_ca["key"]) as server:
        with pytest.raises(SearchClusterError, match="ELASTICSEARCH_URL=https://.* cannot be reached.*CERTIFICATE"):
            SearchCluster(url=server.url, engine=engine).connect()
        with SearchCluster(url=server.url, engine=engine, ca_file=private_ca["ca"]).connect() as sink:
            assert sink.cluster.version == FLAVOURS[flavour]["version"]
