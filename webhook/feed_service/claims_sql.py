"""The claims database's server-side code on PostgreSQL (webhook/feed_service/claims_store.py runs it)."""

from __future__ import annotations

# A claim in one statement, so one round trip: _claim's steps as a server-side function, under the same
# per-instruction advisory lock (held until the statement's transaction ends). Replaced at every start.
CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION opos_claim(p_instruction text, p_scope text, p_probe text, p_limit integer,
    p_address text, p_per_address integer, OUT o_granted boolean, OUT o_used integer, OUT o_refusal text)
LANGUAGE plpgsql AS $$
DECLARE
    held_scope text;
    mine integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_instruction, 0));
    SELECT c.scope INTO held_scope FROM opos_claims c WHERE c.instruction = p_instruction AND c.probe_id = p_probe;
    IF FOUND THEN  -- asking again, perhaps from another network: the slot it holds
        SELECT coalesce(max(n.used), 0) INTO o_used FROM opos_claim_counts n
            WHERE n.instruction = p_instruction AND n.scope = held_scope;
        o_granted := true;
        RETURN;
    END IF;
    SELECT coalesce(max(n.used), 0) INTO o_used FROM opos_claim_counts n
        WHERE n.instruction = p_instruction AND n.scope = p_scope;
    o_granted := false;
    IF o_used >= p_limit THEN
        o_refusal := 'cap';
        RETURN;
    END IF;
    IF p_per_address > 0 AND p_address <> '' THEN
        SELECT count(*) INTO mine FROM opos_claims c WHERE c.instruction = p_instruction AND c.address = p_address;
        IF mine >= p_per_address THEN
            o_refusal := 'address';
            RETURN;
        END IF;
    END IF;
    INSERT INTO opos_claims (instruction, probe_id, scope, address) VALUES (p_instruction, p_probe, p_scope, p_address);
    INSERT INTO opos_claim_counts (instruction, scope, used) VALUES (p_instruction, p_scope, 1)
        ON CONFLICT (instruction, scope) DO UPDATE SET used = opos_claim_counts.used + 1;
    o_used := o_used + 1;
    o_granted := true;
END
$$"""
