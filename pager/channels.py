"""How a message reaches people: the robots' documented request formats and signatures,
SMTP, gammu-smsd for SMS, a templated HTTP gateway, a plain webhook.

`send` returns when the channel confirmed the message (a robot's success code, the SMTP
server's 250, a gateway's 2xx and its own success answer), or, for SMS, the files it
handed to gammu-smsd's outbox, which `confirm` follows to the sent folder; it raises
Failed (retry, then the person's next channel) or RateLimited (the robot said too fast:
the message waits and goes out with the next batch).
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import json
import logging
import re
import smtplib
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from string import Template

from pager import config as cfg
from pager.messages import Message, fit

log = logging.getLogger("insmon.pager.channels")
# The robots' documented "too fast" answers
RATE_LIMITED = {"wecom": {45009}, "dingtalk": {130101}, "feishu": {9499, 11232}}
# The robots' documented size limits, in UTF-8 bytes: WeCom's markdown content 4,096
# (its text 2,048: errcode 40058 over either), DingTalk's and Feishu's request 20 KB
# (kept under with room for the JSON around the text).
MAX_BYTES = {"wecom": 4096, "dingtalk": 18000, "feishu": 18000}
# Where each robot's answer says whether it took the message, 0 when it did: WeCom's and
# DingTalk's errcode, Feishu's code (its older answer: StatusCode). An answer without it
# (a proxy's or a captive portal's page, an empty 200) is no evidence.
RESULT = {"wecom": ("errcode",), "dingtalk": ("errcode",), "feishu": ("code", "StatusCode")}


class Failed(Exception):
    pass


class RateLimited(Failed):
    pass


def send(channel: cfg.Channel, people: list[cfg.Person], message: Message
         ) -> list[str] | None:
    """One message to these people over one channel (a robot: one post @ all of them).
    None: the channel confirmed it; a list: the files handed to gammu-smsd (`confirm`)."""
    return {"wecom": _wecom, "dingtalk": _dingtalk, "feishu": _feishu, "email": _email,
            "sms": _sms, "http": _http, "webhook": _webhook}[channel.type](
                channel, people, message)


def fits(channel: cfg.Channel, people: list[cfg.Person], message: Message) -> bool:
    """Whether a robot takes the message in one post (other channels take any size)."""
    if channel.type not in MAX_BYTES:
        return True
    return len(_robot_text(channel, people, message).encode()) <= MAX_BYTES[channel.type]


def _robot_text(channel: cfg.Channel, people: list[cfg.Person], message: Message) -> str:
    """The text a robot posts, mentions included: what its size limit counts."""
    if channel.type == "wecom":
        mentions = " ".join(f"<@{p.wecom}>" for p in people if p.wecom)
        return f"**{message.title}**\n{message.text}" + (f"\n{mentions}" if mentions else "")
    if channel.type == "dingtalk":
        at = " ".join(f"@{m}" for m in (*(p.mobile for p in people if p.mobile and
                                           not p.dingtalk),
                                         *(p.dingtalk for p in people if p.dingtalk)))
        return (f"### {message.title}\n\n" + message.text.replace("\n", "\n\n")
                + (f"\n\n{at}" if at else ""))
    at = "".join(f'<at user_id="{p.feishu}">{p.name}</at>' for p in people if p.feishu)
    return f"{message.title}\n{message.text}{at}"


def posts(channel: cfg.Channel, people: list[cfg.Person]) -> int:
    """Requests one message makes to the channel, as its rate limit counts them: WeCom
    @-s people with no WeCom id by mobile in a second, text post."""
    if channel.type == "wecom" and any(p.mobile and not p.wecom for p in people):
        return 2
    return 1


# ------------------------------------------------------------------ robots

def _wecom(channel: cfg.WeCom, people: list[cfg.Person], message: Message) -> None:
    """企业微信群机器人: markdown, `<@userid>` for who has a WeCom id; the others are
    @-ed by mobile in a text message right after (markdown cannot @ by mobile)."""
    _robot(channel, channel.url, {"msgtype": "markdown", "markdown": {
        "content": _robot_text(channel, people, message)}})
    mobiles = [p.mobile for p in people if not p.wecom and p.mobile]
    if mobiles:  # the text message's limit is 2,048 bytes: the title, cut to fit
        try:
            _robot(channel, channel.url, {"msgtype": "text", "text": {
                "content": message.title.encode()[:1800].decode(errors="ignore"),
                "mentioned_mobile_list": mobiles}})
        except Failed as exc:  # the group has the page; only the @ by mobile is missing
            log.warning("WeCom: the page went, its @ by mobile did not: %s", exc)


def _dingtalk(channel: cfg.DingTalk, people: list[cfg.Person], message: Message) -> None:
    """钉钉自定义机器人: markdown; with 加签, timestamp and sign on the URL
    (sign = base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")))."""
    url = channel.url
    if channel.secret:
        stamp = str(int(time.time() * 1000))
        digest = hmac.new(channel.secret.encode(), f"{stamp}\n{channel.secret}".encode(),
                          hashlib.sha256).digest()
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(
            {"timestamp": stamp, "sign": base64.b64encode(digest).decode()})
    mobiles = [p.mobile for p in people if p.mobile and not p.dingtalk]
    ids = [p.dingtalk for p in people if p.dingtalk]
    _robot(channel, url, {
        "msgtype": "markdown",
        "markdown": {"title": message.title, "text": _robot_text(channel, people, message)},
        "at": {"atMobiles": mobiles, "atUserIds": ids, "isAtAll": False}})


def _feishu(channel: cfg.Feishu, people: list[cfg.Person], message: Message) -> None:
    """飞书自定义机器人: text; with 签名校验, timestamp and sign in the body
    (sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", message=b"")))."""
    body: dict = {}
    if channel.secret:
        stamp = str(int(time.time()))
        digest = hmac.new(f"{stamp}\n{channel.secret}".encode(), b"", hashlib.sha256).digest()
        body = {"timestamp": stamp, "sign": base64.b64encode(digest).decode()}
    body |= {"msg_type": "text", "content": {"text": _robot_text(channel, people, message)}}
    _robot(channel, channel.url, body)


def _robot(channel: cfg.Channel, url: str, body: dict) -> None:
    answer = _post(url, json.dumps(body, ensure_ascii=False).encode(), channel.timeout)
    try:
        reply = json.loads(answer)
    except ValueError:
        raise Failed(f"answered with no JSON: {answer[:200]!r}") from None
    fields = [f for f in RESULT[channel.type] if isinstance(reply, dict) and f in reply]
    if not fields:
        raise Failed(f"answered without {' or '.join(RESULT[channel.type])}: "
                     f"{answer[:200]!r}")
    code = reply[fields[0]]
    why = reply.get("errmsg") or reply.get("msg") or reply.get("StatusMessage")
    if code in RATE_LIMITED[channel.type]:
        raise RateLimited(f"rate limited: {code} {why}")
    if type(code) is not int or code != 0:
        raise Failed(f"refused: {code!r} {why}")


# ------------------------------------------------------------------ the others

def _email(channel: cfg.Email, people: list[cfg.Person], message: Message) -> None:
    """Sent when the server answered 250 to the message and took every recipient."""
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = channel.sender
    mail["To"] = ", ".join(p.email for p in people if p.email)
    mail.set_content(message.text)
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout) as smtp:
            if channel.starttls:
                smtp.starttls(context=ssl.create_default_context(
                    cafile=str(channel.ca_file) if channel.ca_file else None))
            if channel.username and channel.password_file:
                smtp.login(channel.username, channel.password_file.read_text().strip())
            refused = smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        raise Failed(f"SMTP {channel.host}:{channel.port}: {exc}") from None
    if refused:  # some recipients taken, these not: not all of them have it
        raise Failed(f"SMTP {channel.host}:{channel.port} refused "
                     + ", ".join(f"{a} ({c})" for a, (c, _) in refused.items()))


def _sms(channel: cfg.Sms, people: list[cfg.Person], message: Message) -> list[str]:
    """Handed to gammu-smsd's outbox with gammu-smsd-inject (its documented way in); the
    daemon owns the modem and sends it, retrying on its own. The outbox files, for
    `confirm` to follow."""
    spool(channel)  # a config the pager cannot follow fails now, not after the bound
    text = fit(message.short, channel.max_chars)
    files = []
    for person in people:
        try:
            done = subprocess.run(
                ["gammu-smsd-inject", "-c", str(channel.gammu_config), "TEXT", person.mobile,
                 "-unicode", "-len", str(len(text) * 2), "-text", text],
                capture_output=True, text=True, timeout=channel.timeout,
                stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Failed(f"gammu-smsd-inject: {exc}") from None
        if done.returncode != 0:
            raise Failed(f"gammu-smsd-inject exited {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")
        written = re.search(r"^Written message with ID (.+)$", done.stdout, re.MULTILINE)
        if written is None:
            raise Failed(f"gammu-smsd-inject named no outbox file: {done.stdout[-300:]!r}")
        files.append(Path(written.group(1).strip()).name)
    return files


def spool(channel: cfg.Sms) -> dict[str, Path]:
    """gammu-smsd's folders (outbox, sent, error, inbox) from its config; Failed when the
    pager cannot tell sent from waiting there: another backend than files, or a sent or
    error folder that is not a folder of its own (gammu-smsd's defaults)."""
    smsdrc = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(channel.gammu_config, encoding="utf-8", errors="replace") as file:
            smsdrc.read_file(file)
    except (OSError, configparser.Error) as exc:
        raise Failed(f"{channel.gammu_config}: {exc}") from None
    get = lambda key: smsdrc.get("smsd", key, fallback=None)  # noqa: E731
    if (get("service") or "files").lower() != "files":
        raise Failed(f"{channel.gammu_config}: service {get('service')}: the pager follows "
                     "gammu-smsd's files backend only (service = files)")
    folders = {key: get(f"{key}path") for key in ("outbox", "inbox")}
    folders |= {key: get(f"{key}smspath") for key in ("sent", "error")}
    paths = {k: Path(v).resolve() for k, v in folders.items() if v}
    for key in ("outbox", "sent", "error"):
        if key not in paths:
            raise Failed(f"{channel.gammu_config}: [smsd] {key}"
                         f"{'path' if key == 'outbox' else 'smspath'} is not set: the pager "
                         "reads it to know whether an SMS went")
    if len({paths["outbox"], paths["sent"], paths["error"]}) < 3:
        raise Failed(f"{channel.gammu_config}: outboxpath, sentsmspath and errorsmspath "
                     "must be three folders: the pager reads them to know whether an SMS went")
    return paths


def confirm(channel: cfg.Channel, files: list[str], withdraw: bool = False) -> bool | None:
    """What became of the files handed to gammu-smsd: True once all are in its sent
    folder, False when one is in its error folder, None while they wait. `withdraw`: the
    wait is over; what is still in the outbox is taken back (False), so that it cannot
    go out after the person's next channel."""
    if channel.type != "sms":
        raise Failed(f"no files to follow on a {channel.type} channel")
    folders = spool(channel)
    if any((folders["error"] / name).exists() for name in files):
        return False
    if all((folders["sent"] / name).exists() for name in files):
        return True
    if not withdraw:
        return None
    for name in files:
        (folders["outbox"] / name).unlink(missing_ok=True)
    # sent in the moment before it was taken back
    return all((folders["sent"] / name).exists() for name in files)


def _http(channel: cfg.HttpGateway, people: list[cfg.Person], message: Message) -> None:
    """Sent on a 2xx answer that matches the gateway's `expect`, when it has one."""
    text = fit(message.short, channel.max_chars) if channel.max_chars else message.text
    for person in people:
        values = {"mobile": person.mobile or "", "name": person.name, "text": text,
                  "text_json": json.dumps(text, ensure_ascii=False)}
        url = Template(channel.url).safe_substitute(
            {k: urllib.parse.quote(v) for k, v in values.items()})
        headers = {k: Template(v).safe_substitute(values) for k, v in channel.headers.items()}
        body = (Template(channel.body).safe_substitute(values).encode()
                if channel.method != "GET" else None)
        answer = _post(url, body, channel.timeout, channel.method, headers)
        if channel.expect and not re.search(channel.expect,
                                            answer.decode("utf-8", "replace")):
            raise Failed(f"{_host(url)} answered without its success ({channel.expect}): "
                         f"{answer[:200]!r}")


def _webhook(channel: cfg.Webhook, people: list[cfg.Person], message: Message) -> None:
    body = {"title": message.title, "text": message.text,
            "people": [{"name": p.name, "mobile": p.mobile, "email": p.email}
                       for p in people]}
    _post(channel.url, json.dumps(body, ensure_ascii=False).encode(), channel.timeout)


def _post(url: str, body: bytes | None, timeout: float, method: str = "POST",
          headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(
        url, data=body, method=method,
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not 200 <= response.status < 300:
                raise Failed(f"HTTP {response.status} from {_host(url)}")
            return response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        raise Failed(f"HTTP {exc.code} from {_host(url)}") from None
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        raise Failed(f"{_host(url)}: {getattr(exc, 'reason', None) or exc}") from None


def _host(url: str) -> str:
    """The host only: robot URLs carry their access token in the query."""
    return urllib.parse.urlsplit(url).netloc or url[:40]
