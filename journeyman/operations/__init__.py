"""Operations: what operators do to a running service.

`releases` is the publish log (what is live) and the processes that follow it,
`controls` the run and journey controls (pause, resume, skip a wait, move, end),
`devstate` what `journeyman dev` leaves in `.journeyman/` for the other commands.
"""
