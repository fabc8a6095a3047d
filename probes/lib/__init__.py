"""Helpers the probe kinds share (a pinger, sockets and binding, an SNMP client, RAID
parsers): not kinds themselves, so `ls probes/` lists the kinds."""
