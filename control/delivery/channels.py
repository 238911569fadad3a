"""How a delivery notice reaches the party: one interface, several providers.

A :class:`Channel` sends one :class:`Notice` and answers the provider's reference, or raises
:class:`ChannelFailed` with why (the delivery is then recorded as failed and the case shows the
fallback). Providers, chosen by configuration (``[delivery]`` in control/config.py):

* :class:`OutboxChannel`: the embedded default, a table (``delivery_outbox``) that a test or an
  operator reads (``remotecase delivery outbox``); used for every channel no provider serves;
* :class:`HttpSmsChannel`: an SMS gateway reached over HTTP (a JSON POST);
* :class:`SmtpChannel`: e-mail through an SMTP relay (smtplib, in a thread).

A licensed provider (a carrier's SMS platform, 交管12123 messages) is one more class with the
same ``send``.
"""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiohttp

from ..auth import now_iso
from ..config import DeliveryConfig
from ..db import Database

CHANNELS = ("sms", "email")  # what a consent may name (送达方式)
CHANNEL_NAMES = {"sms": "短信", "email": "电子邮件"}


class ChannelFailed(Exception):
    """The provider did not accept the notice (``中文 / English``)."""


@dataclass(frozen=True)
class Notice:
    delivery_id: int | None  # the delivery (deliveries.id); None for an education send
    channel: str  # sms | email
    address: str
    subject: str
    text: str
    # an attendance record sent to a company (edu_sends.id, control/education/sending.py)
    education_send: int | None = None

    @property
    def reference(self) -> str:
        """What the notice is about, for a provider's own records."""
        if self.education_send is not None:
            return f"education-send-{self.education_send}"
        return f"delivery-{self.delivery_id}"


class Channel(Protocol):
    name: str  # the provider, recorded with the delivery

    async def send(self, notice: Notice) -> str:
        """Send ``notice``; the provider's reference for it. Raises :class:`ChannelFailed`."""
        ...


class OutboxChannel:
    """The embedded outbox: the notice is kept as a row, read by whoever delivers it on."""

    name = "outbox"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def send(self, notice: Notice) -> str:
        def keep(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO delivery_outbox (delivery_id, edu_send_id, channel, address, text, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    notice.delivery_id,
                    notice.education_send,
                    notice.channel,
                    notice.address,
                    notice.text,
                    now_iso(),
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return f"outbox:{await self.db.run(keep)}"


class HttpSmsChannel:
    name = "sms-http"

    def __init__(self, url: str, sender: str, timeout: float) -> None:
        self.url, self.sender, self.timeout = url, sender, timeout

    async def send(self, notice: Notice) -> str:
        body = {
            "to": notice.address,
            "text": notice.text,
            "sender": self.sender,
            "reference": notice.reference,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as http,
                http.post(self.url, json=body) as response,
            ):
                answer = await response.text()
                if not 200 <= response.status < 300:
                    raise ChannelFailed(
                        f"短信网关拒绝（HTTP {response.status}）/ the SMS gateway answered "
                        f"HTTP {response.status}: {answer[:200]}"
                    )
                return f"sms-http:{answer[:100]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChannelFailed(
                f"无法连接短信网关 / the SMS gateway could not be reached: {exc!r}"
            ) from None


class SmtpChannel:
    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, starttls: bool, timeout: float) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.timeout = starttls, timeout

    def _send(self, notice: Notice) -> str:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = notice.address
        message["Subject"] = notice.subject
        message.set_content(notice.text)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                refused = smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelFailed(
                f"邮件服务器未接收 / the SMTP relay did not accept the mail: {exc!r}"
            ) from None
        if refused:
            raise ChannelFailed(f"收件地址被拒绝 / recipient refused: {refused!r}")
        return f"smtp:{message.get('Message-ID', '')}"

    async def send(self, notice: Notice) -> str:
        return await asyncio.to_thread(self._send, notice)


def channel_for(config: DeliveryConfig, channel: str, db: Database) -> Channel:
    """The provider configured for ``channel``; the outbox when none is."""
    if channel == "sms" and config.sms_url:
        return HttpSmsChannel(config.sms_url, config.sms_sender, config.timeout)
    if channel == "email" and config.smtp_host:
        return SmtpChannel(
            config.smtp_host,
            config.smtp_port,
            config.smtp_from,
            config.smtp_starttls,
            config.timeout,
        )
    return OutboxChannel(db)


def outbox(
    conn: sqlite3.Connection, delivery_id: int | None = None, education_send: int | None = None
) -> list[dict[str, object]]:
    """The outbox's notices, oldest first (all, one delivery's or one education send's)."""
    sql = "SELECT * FROM delivery_outbox"
    args: tuple[object, ...] = ()
    if delivery_id is not None:
        sql, args = sql + " WHERE delivery_id = ?", (delivery_id,)
    elif education_send is not None:
        sql, args = sql + " WHERE edu_send_id = ?", (education_send,)
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", args).fetchall()]
