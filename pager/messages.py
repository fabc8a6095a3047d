"""What a person reads: Chinese first, the alert's English name alongside.

Each message has a full text (robots, e-mail, webhooks) and a short one that fits an SMS
(`max_chars`, two concatenated parts by default): grade, what, since when, how to ack.
What a channel takes (`Message`, `Short`, `fit`) is the channels' contract
(pager/channels/base.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from pager.channels.base import Message, Short
from pager.config import PagerConfig
from pager.records import PAGES, Incident, Kind, Page
from vocabulary import GRADE_ZH, GRADES, SHANGHAI

KIND_ZH = {Kind.PAGE: "", Kind.ESCALATION: "【升级】", Kind.REPEAT: "【仍在告警】",
           Kind.RESOLVED: "【已恢复】", Kind.ACK: "【已确认】", Kind.REMINDER: "【报告提醒】"}


def clock(at: float, seconds: bool = True) -> str:
    moment = dt.datetime.fromtimestamp(at, SHANGHAI)
    return moment.strftime("%H:%M:%S" if seconds else "%H:%M")


def when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def minutes(seconds: float) -> str:
    seconds = max(seconds, 0.0)  # the wall clock may have stepped back
    return f"{seconds / 60:.0f} 分钟" if seconds >= 60 else f"{seconds:.0f} 秒"


def compose(config: PagerConfig, incident: Incident, kind: str, step: int,
            paged: list[Page], tokens: dict[str, str | None], now: float,
            ack_at: list[str] | None = None) -> Message:
    """The message of `kind` for the people in `tokens` (person -> their ack token).
    `ack_at`: the pagers whose ack pages the links open, this one first (a pair's other
    pager is the fallback, in the messages that have room for it)."""
    grade = f"【{GRADE_ZH.get(incident['grade'], '未分级')}】"
    drill = "【演练】" if incident["drill"] else ""
    head = f"{drill}{KIND_ZH[kind]}{grade}{incident['summary']}"
    title = f"{drill}{KIND_ZH[kind]}{grade}{incident['alertname']} @ {incident['site']}"
    bases = [f"{url.rstrip('/')}/ack/" for url in ack_at or [config.public_url]]
    links = {p: bases[0] + t for p, t in tokens.items() if t}
    link = next(iter(links.values()), "")
    stopped = incident["alertname"] in config.settlement_stopped
    people = "、".join(f"{config.people[p['person']].name}（{p['team']}）" for p in paged
                      if p["person"] in config.people) or "无"
    runbook = incident["runbook"]
    if runbook and config.runbook_url:
        runbook = f"{config.runbook_url.rstrip('/')}/{runbook.removeprefix('runbooks/')}"
    acker = config.people.get(incident["acked_by"] or "")
    acker_name = acker.name if acker else incident["acked_by"]
    lines = [head]
    if drill:
        lines.append("演练，不是真实故障 / drill, not a real incident")
    if kind == Kind.RESOLVED:
        lines.append(f"恢复于 {when(incident['resolved'])}，持续 "
                     f"{minutes(incident['resolved'] - incident['started'])}")
    elif kind == Kind.ACK:
        lines.append(f"{acker_name} 已确认 {clock(incident['acked'])}，升级已停止 / acknowledged")
    elif kind == Kind.REMINDER:
        deadline = incident["opened"] + (config.reports.major if incident["grade"] in ("I", "II")
                                         else config.reports.other)
        lines.append(f"书面事件报告须于 {when(deadline)} 前提交（insmon review --report 起草）")
    else:
        if kind in (Kind.ESCALATION, Kind.REPEAT):
            lines.append(f"已 {minutes(now - incident['opened'])} 无人确认"
                         + (f"，升级通知 (step {step})" if kind == Kind.ESCALATION else ""))
        lines += [
            f"开始 since: {when(incident['started'])}"
            f"（已持续 {minutes(now - incident['started'])}）",
            f"医保结算: {'已中断 settlement STOPPED' if stopped else '未中断'}",
            f"级别 grade: {incident['grade']}  站点 site: {incident['site']}  "
            f"告警 alert: {incident['alertname']}",
        ]
        if incident["description"]:
            lines.append(incident["description"])
        lines.append(f"已通知 paged: {people}")
        if runbook:
            lines.append(f"处置手册 runbook: {runbook}")
        if incident["acked"]:
            lines.append(f"已由 {acker_name} 确认 {clock(incident['acked'])}")
        elif links:
            if len(links) == 1:
                lines.append(f"确认 acknowledge: {link}")
                lines += [f"备用 fallback: {base}{link.rsplit('/', 1)[1]}"
                          for base in bases[1:]]
            else:
                lines += [f"{config.people[p].name} 确认: {url}" for p, url in links.items()]
            # an incident's number is each pager's own: a pair's messages go without it
            lines.append("或短信回复 1" if len(bases) > 1 else
                         f"或短信回复 1 / ACK {incident['id']}，或 insmon pager ack "
                         f"{incident['id']}")
    text = "\n".join(lines)
    return Message(title, text, _short(incident, kind, head, stopped, link, acker_name, now,
                                       numbered=len(bases) == 1),
                   frozenset((incident["id"], kind, step, person) for person in tokens))


def _short(incident: Incident, kind: str, head: str, stopped: bool, link: str,
           acker: str | None, now: float, numbered: bool = True) -> Short:
    """The SMS's fields, fitted to a channel's length by `fit`."""
    tail = {Kind.PAGE: f"{clock(incident['started'], False)}起",
            Kind.ESCALATION: f"{clock(incident['started'], False)}起，无人确认",
            Kind.REPEAT: f"{clock(incident['started'], False)}起，仍在告警",
            Kind.RESOLVED: f"{clock(incident['resolved'] or now, False)}恢复",
            Kind.ACK: f"{acker} 已确认 {clock(incident['acked'] or now)}",
            Kind.REMINDER: "请按时提交事件报告"}[kind]
    if stopped and kind in PAGES:
        tail = "结算已中断 " + tail
    if kind in PAGES and not incident["acked"]:
        tail += f"。回复1确认(ACK {incident['id']})" if numbered else "。回复1确认"
        return Short(head, tail, link)
    return Short(head, tail)


def digest(entries: list[tuple[Incident, str, int, str]], since: float, link: str,
           fits: Callable[[Message], bool], most: int = 200) -> Message:
    """A storm's messages to one person in one (pager/storm.py): `entries` are (incident,
    kind, step, person). How many, by grade; what opened, one line per kind, grade and
    alert with its sites and how many (and the summary of an alert at one site, when they
    all fit so), Level I first, as many lines as `fits` takes (and `most`); the rest
    counted by grade; one link to the whole list."""
    groups: dict[tuple, list[Incident]] = {}
    for incident, kind, _, _ in entries:
        grade = incident["grade"]
        key = (kind not in PAGES, GRADES.index(grade) if grade in GRADES else len(GRADES),
               bool(incident["drill"]), KIND_ZH[kind], grade, incident["alertname"])
        groups.setdefault(key, []).append(incident)
    lines = []
    for (_, _, drill, label, grade, alertname), incidents in sorted(
            groups.items(), key=lambda item: item[0][:2]):  # stable: first come first
        unique = list(dict.fromkeys(i["site"] or "-" for i in incidents))
        where = "、".join(unique[:5]) + (f" 等 {len(unique)} 个站点" if len(unique) > 5 else "")
        what = f" — {incidents[0]['summary']}" if len(incidents) == 1 else ""
        lines.append(((grade, label), len(incidents), f"{'【演练】' if drill else ''}{label}"
                      f"【{GRADE_ZH.get(grade, '未分级')}】{alertname} @ {where}"
                      f"（{len(incidents)}）", what))
    total = len(entries)
    counts = _counts([(grade, label, n) for (grade, label), n, _, _ in lines])
    title = f"【告警汇总】{total} 条通知：{counts}"
    head = [f"【告警汇总】自 {clock(since)} 起 {total} 条通知：{counts} / digest of {total} "
            "notifications", f"全部列表 full list: {link}"]
    news = frozenset((i["id"], kind, step, person) for i, kind, step, person in entries)
    short = Short(f"【告警汇总】{total}条:{counts.replace(' · ', ' ')}", "", link)

    def message(named: int, summaries: bool) -> Message:
        rest = lines[named:]
        left = _counts([(grade, label, n) for (grade, label), n, _, _ in rest])
        more = [f"另有 {sum(n for _, n, _, _ in rest)} 条未列出：{left}（见全部列表 see the "
                "list）"] if rest else []
        return Message(title, "\n".join(
            head + [text + (what if summaries else "") for _, _, text, what in lines[:named]]
            + more), short, news)

    if len(lines) <= most and fits(message(len(lines), summaries=True)):
        return message(len(lines), summaries=True)
    named = 0
    while named < min(len(lines), most) and fits(message(named + 1, summaries=False)):
        named += 1
    return message(named, summaries=False)


def _counts(groups: list[tuple[str, str, int]]) -> str:
    """一级 2 · 二级 996 · 【已恢复】3: pages by grade, then the other kinds."""
    by: dict[str, int] = {}
    for grade, label, n in groups:
        name = GRADE_ZH.get(grade, "未分级") if label in ("", KIND_ZH[Kind.ESCALATION],
                                                        KIND_ZH[Kind.REPEAT]) else label
        by[name] = by.get(name, 0) + n
    return " · ".join(f"{name} {n}" for name, n in by.items())


def pack(parts: list[Message], fits: Callable[[Message], bool]
         ) -> list[list[tuple[int, Message]]]:
    """The parts in as few posts as `fits` allows, in order, each post its parts with
    their index in `parts`; a part too large alone is cut at line ends into posts that
    each fit (`_pieces`), sent all or not at all."""
    posts: list[list[tuple[int, Message]]] = []
    for i, part in enumerate(parts):
        if posts and fits(join([m for _, m in posts[-1]] + [part])):
            posts[-1].append((i, part))
        elif fits(part):
            posts.append([(i, part)])
        else:
            posts += [[(i, piece)] for piece in _pieces(part, fits)]
    return posts


def join(parts: list[Message]) -> Message:
    if len(parts) == 1:
        return parts[0]
    return Message(f"{len(parts)} 条通知: " + parts[0].title,
                   "\n\n----\n\n".join(p.text for p in parts), parts[0].short,
                   frozenset().union(*(p.news for p in parts)))


def _pieces(part: Message, fits: Callable[[Message], bool]) -> list[Message]:
    """A part too large for one post, in posts of whole lines: never a post of less than
    a line (a line too long even alone is shortened to fit, marked …)."""
    title = f"{part.title} (续)"
    probe = lambda text: fits(Message(title, text, part.short, part.news))  # noqa: E731
    pieces, current = [], ""
    for line in (_shorten(line, probe) for line in part.text.split("\n")):
        joined = f"{current}\n{line}" if current else line
        if current and not probe(joined):
            pieces.append(current)
            joined = line
        current = joined
    pieces.append(current)
    return [Message(part.title if i == 0 else title, text, part.short, part.news)
            for i, text in enumerate(pieces)]


def _shorten(line: str, fits: Callable[[str], bool]) -> str:
    """The line, or its longest beginning that fits, marked … (a description of kilobytes
    in one line: the rest is on the ack page)."""
    if fits(line):
        return line
    low, high = 0, len(line)  # fits(line[:low] + "…"), or low is 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(line[:middle] + "…"):
            low = middle
        else:
            high = middle - 1
    return line[:low] + "…"


def webhook_body(incident: Incident, kind: str, person: str, message: Message) -> bytes:
    return json.dumps({"incident": incident["id"], "kind": kind, "grade": incident["grade"],
                       "alertname": incident["alertname"], "site": incident["site"],
                       "drill": bool(incident["drill"]), "person": person,
                       "title": message.title, "text": message.text},
                      ensure_ascii=False).encode()
