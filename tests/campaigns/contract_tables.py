"""A small valid world as CSV text, for contract and snapshot tests."""

from pathlib import Path

EVENT_TYPES = {"impression", "click", "application", "approval", "activation"}

VALID = {
    "customers": "customer_id,birth_date,income,region,is_student,housing\n"
    "c1,1990-01-02,50000,north,false,renter\nc2,1960-05-06,80000,south,no,owner\n",
    "products": "product_id,family,name,min_credit_score,max_dti\np1,credit_card,Card,600,0.4\np2,deposit,Savings,,\n",
    "events": "customer_id,product_id,event_type,event_time,channel\n"
    "c1,p1,impression,2026-01-01T10:00:00,app\n"
    "c1,p1,click,2026-01-01 10:05:00,app\n"
    "c2,p2,activation,2026-02-01,branch\n",
    "risk": "customer_id,as_of,credit_score,dpd_current,max_dpd_12m,dti,fraud_flag\n"
    "c1,2026-05-01,650,0,0,0.3,false\nc2,2026-05-01,,0,30,0.2,true\n",
    "consents": "customer_id,channel,purpose,granted,updated_at\n"
    "c1,email,marketing,true,2025-01-01\nc1,email,marketing,false,2025-06-01\n",
    "holdings": "customer_id,product_id,since,until\nc2,p2,2020-01-01,\n",
    "suppression": "customer_id,reason,channel,until\nc9,do_not_contact,,\n",
}


def write(tmp_path: Path, **overrides: str) -> Path:
    for name, text in {**VALID, **overrides}.items():
        if text is not None:
            (tmp_path / f"{name}.csv").write_text(text)
    return tmp_path
