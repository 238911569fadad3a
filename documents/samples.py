"""Sample case data for every document kind: for the tests, the docs and ``documents render
--sample``. Names and numbers are invented."""

from __future__ import annotations

import copy
from typing import Any

_BASE: dict[str, Any] = {
    "department": {
        "name": "某市公安局交通警察支队一大队",
        "brigade": "B01",
        "abbr": "某公交",
        "seal_name": "某市公安局交通警察支队一大队交通事故处理专用章",
    },
    "case": {
        "id": "C2026-0042",
        "time": "2026年11月30日 08时15分",
        "place": "G15沈海高速 K1203+500",
        "weather": "晴",
        "start_time": "2026年12月1日 09时30分",
        "end_time": "2026年12月1日 10时05分",
        "inquiry_no": 1,
        "rights_told": "已告知被询问人有陈述、申辩的权利，对与本案无关的问题有拒绝回答的权利，"
        "以及如实陈述的义务和作伪证应负的法律责任。",
        "issue_date": "2026年12月1日",
    },
    "officers": [
        {"id": "o1", "name": "王警官", "badge": "012345"},
        {"id": "o2", "name": "李警官", "badge": "012346"},
    ],
    "parties": [
        {
            "id": "p1",
            "name": "张三",
            "sex": "男",
            "birth_date": "1985年3月2日",
            "id_type": "居民身份证",
            "id_number": "110101198503020011",
            "address": "北京市东城区某路1号",
            "phone": "13800000001",
            "responsibility": "全部责任",
            "fault": "未与前车保持安全距离",
            "vehicle": {
                "type": "小型轿车",
                "plate": "京A12345",
                "insurer": "某财产保险公司",
                "policy": "PDZA2026000001",
            },
        },
        {
            "id": "p2",
            "name": "李四",
            "sex": "女",
            "birth_date": "1990年7月9日",
            "id_type": "居民身份证",
            "id_number": "320102199007090022",
            "address": "南京市玄武区某街2号",
            "phone": "13900000002",
            "responsibility": "无责任",
            "fault": "无过错",
            "vehicle": {
                "type": "小型普通客车",
                "plate": "苏A67890",
                "insurer": "某人寿财产保险公司",
                "policy": "PDZA2026000002",
            },
        },
    ],
    "findings": {
        "collision": "追尾碰撞",
        "road": "双向六车道沥青路面，路面干燥，视线良好",
        "facts": "京A12345小型轿车沿沈海高速由北向南行驶至K1203+500处，与同向前方"
        "苏A67890小型普通客车尾部相撞，造成两车损坏。",
        "evidence": "现场照片、行车记录仪视频、当事人陈述；京A12345未与前车保持安全距离。",
        "undetermined_reason": "现场无监控，双方陈述矛盾且无其他证据",
    },
    "turns": [
        {
            "q": "你是否清楚今天通过视频接受询问的原因？",
            "a": "清楚，是11月30日在沈海高速上追尾的事。",
            "time": "09:31:05",
            "offset": 95,
        },
        {
            "q": "请你讲一下事故经过。",
            "a": "我当时车速约九十公里，前车突然减速，我刹车不及撞上了。",
            "time": "09:33:40",
            "offset": 250,
        },
    ],
    "penalty": {
        "facts": "2026年11月30日8时15分，张三驾驶京A12345在G15沈海高速K1203+500处未与前车"
        "保持安全距离。",
        "reasons": "违反《中华人民共和国道路交通安全法》第四十三条",
        "legal_basis": "《中华人民共和国道路交通安全法》第九十条",
        "penalty": "罚款人民币200元",
        "statement": "无异议",
        "payment": "自收到本决定书之日起十五日内通过交管12123缴纳",
    },
    "mediation": {
        "legal_basis": "《道路交通事故处理程序规定》第八十四条至第九十三条",
        "losses": "苏A67890车辆维修费人民币8,600元",
        "items": "车辆维修费人民币8,600元",
        "shares": "张三承担100%",
        "payment": "张三于2026年12月10日前一次性转账支付李四",
        "date": "2026年12月1日",
        "start_date": "2026年12月1日",
        "end_reason": "当事人李四中途退出调解",
    },
    "delivery": {
        "method": "电子送达（短信链接及交管12123）",
        "address": "13800000001",
        "agreed": "同意",
        # the receipt's (delivery_receipt)
        "channel": "短信",
        "document_title": "道路交通事故认定书",
        "document_number": "某公交认〔2026〕第0001号",
        "document_sha256": "3f" * 32,
        "consent_number": "某公交送〔2026〕第0001号",
        "sent_at": "2026年12月1日 10时30分",
        "opened_at": "2026年12月1日 10时41分",
        "acknowledged_at": "2026年12月1日 10时42分",
    },
    "talk": {
        "subject": "某运输公司驾驶人多次超速",
        "content": "通报本季度违法情况，要求落实安全教育。",
        "requirements": "十日内报送整改报告",
    },
}


def sample(kind: str) -> dict[str, Any]:
    """A complete data set for ``kind`` (a fresh copy)."""
    data = copy.deepcopy(_BASE)
    if kind in (
        "inquiry_record",
        "penalty_notice",
        "penalty_decision",
        "delivery_consent",
        "delivery_receipt",
    ):
        data["parties"] = data["parties"][:1]
    if kind == "mediation_agreement":
        data["parties"].append(
            {
                "id": "p3",
                "name": "王五",
                "responsibility": "无责任（乘车人）",
                "id_number": "330102199901010033",
            }
        )
    if kind in ("education_attendance", "education_certificate"):
        # what control/education/records.py fills in from a session's attendance
        data["case"].update(
            topic="冬季道路运输安全",
            required="45 分 0 秒",
            scope="全体学员",
            rules="入场时及随机时刻人脸核验；仅本人在镜头前时计时。",
            attended="2",
            certified="1",
            session=7,
        )
        for party, watched in zip(data["parties"], ("52 分 10 秒", "12 分 3 秒"), strict=False):
            party.update(
                company="某运输有限公司",
                role="驾驶员",
                joined="2026-12-01 09:30:12",
                left="2026-12-01 10:31:40",
                watched=watched,
                passed="5",
                failed="0",
                flags="无",
                quiz="4/5 题正确，及格（及格线 60%）",
                questions="1",
                result="达到学习要求",
            )
        if kind == "education_certificate":
            data["parties"] = data["parties"][:1]
    return data
