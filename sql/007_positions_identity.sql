-- positions no longer needs its own unique key: a frame's identity is
-- frame_ids' (device, seq) since 006, checked in the same transaction before
-- any row goes into positions. The old key (device, seq, time) cost a second
-- unique index insert per frame, and could not catch the same sequence at
-- another fix time anyway.
ALTER TABLE positions DROP CONSTRAINT positions_frame_key;
