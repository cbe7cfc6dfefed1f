// Package delivery runs ready jobs that carry an HTTP target: it POSTs the
// payload, signed per Standard Webhooks, and turns the response into a
// job.attempted event.
//
// Deliveries are at-least-once: a crash between the POST and the commit of
// its outcome repeats the POST. Every attempt of a job carries the same
// webhook-id (the job id), so receivers can drop repeats.
package delivery
